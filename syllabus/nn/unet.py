"""A UNet that predicts diffusion noise, conditioned on object slots by cross-attention.

The shape of latent diffusion's UNet (Rombach et al. 2022) as SlotDiffusion (Wu et al. 2023)
uses it, small enough for a CPU:

    conv_in -> per level: [ResBlock, SpatialTransformer] x blocks, then a ResBlock that
    average-pools (stride 2) -> middle: ResBlock, SpatialTransformer, ResBlock -> per level
    going up: [ResBlock on (h, skip), SpatialTransformer] x blocks, then a ResBlock that
    interpolates x2 -> GroupNorm, SiLU, conv_out (zero-initialised).

A residual block resamples before its first convolution (pool going down, nearest
interpolation going up, nothing where the size is kept) and adds the projected timestep
embedding between its two convolutions. A spatial transformer block runs on the H*W tokens:
self-attention, cross-attention to the slots (keys and values from the slots, an optional
mask hides slots), feed-forward, each pre-normed and residual. The timestep reaches every
residual block through sinusoidal features (Vaswani et al. 2017, sec. 3.5) and an MLP.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of the timesteps: (B,) -> (B, dim), cosines then sines.

    Frequencies max_period^(-i / (dim/2)), i = 0..dim/2-1 (diffusers' `get_timestep_embedding`
    with `flip_sin_to_cos=True, downscale_freq_shift=0`).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([args.cos(), args.sin()], -1)
    return F.pad(emb, (0, dim % 2))  # (B, dim)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4) or 1, channels)


class ResBlock(nn.Module):
    """GN-SiLU-[resample]-conv, + timestep, GN-SiLU-conv, plus a (resampled, 1x1-projected) skip.

    Args:
        in_ch, out_ch: channels in and out.
        time_dim: width of the timestep embedding (0: none, as in the latent VAE).
        resample: "down" (average pool, stride 2), "up" (nearest interpolation x2) or "" (keep size).
    """

    def __init__(self, in_ch: int, out_ch: int, time_dim: int = 0, resample: str = ""):
        super().__init__()
        if resample not in ("", "down", "up"):
            raise ValueError(f"resample={resample!r}: expected 'down', 'up' or ''")
        self.resample = resample
        self.norm1, self.conv1 = group_norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time = nn.Linear(time_dim, out_ch) if time_dim else None
        self.norm2, self.conv2 = group_norm(out_ch), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(self._resize(F.silu(self.norm1(x))))  # (B, out, H', W')
        if self.time is not None:
            h = h + self.time(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self._resize(self.skip(x)) + h


class Attention(nn.Module):
    """Multi-head attention of queries x (B, N, dim) over a context (B, M, context_dim).

    Args:
        dim: query width (also the output width).
        context_dim: key/value source width (= dim for self-attention).
        heads: number of heads; dim must divide by it.
    """

    def __init__(self, dim: int, context_dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(context_dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """mask: (B, M) bool, True where a context token may be attended to (at least one per row)."""
        B, N, _ = x.shape
        q = self.q(x).view(B, N, self.heads, -1).transpose(1, 2)  # (B, h, N, d)
        k, v = self.kv(context).view(B, context.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)  # (B, h, M, d)
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, M)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, h, N, d)
        return self.out(y.transpose(1, 2).reshape(B, N, -1))


class SpatialTransformer(nn.Module):
    """Self-attention, cross-attention to slots, feed-forward on the H*W tokens of a feature map.

    Args:
        channels: C of the feature map.
        context_dim: slot width D.
        heads: attention heads.
        ff_mult: hidden width of the feed-forward as a multiple of C.
    """

    def __init__(self, channels: int, context_dim: int, heads: int = 4, ff_mult: int = 4):
        super().__init__()
        self.norm_in = group_norm(channels)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.norm1, self.self_attn = nn.LayerNorm(channels), Attention(channels, channels, heads)
        self.norm2, self.cross_attn = nn.LayerNorm(channels), Attention(channels, context_dim, heads)
        self.norm3 = nn.LayerNorm(channels)
        hidden = ff_mult * channels
        self.ff = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels))
        self.proj_out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj_out.weight)  # the block starts as the identity
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, slots: torch.Tensor, slot_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.proj_in(self.norm_in(x)).flatten(2).transpose(1, 2)  # (B, HW, C)
        n = self.norm1(h)
        h = h + self.self_attn(n, n)
        h = h + self.cross_attn(self.norm2(h), slots, slot_mask)  # keys and values from (B, K, D)
        h = h + self.ff(self.norm3(h))
        return x + self.proj_out(h.transpose(1, 2).reshape(B, C, H, W))


class UNet(nn.Module):
    """Noise prediction eps_theta(x_t, t, slots).

    Args:
        in_channels: channels of x_t (3 for the latent VAE).
        channels: feature channels per level; len(channels) - 1 halvings, so H and W must divide
            by 2 ** (len(channels) - 1).
        context_dim: slot width D.
        blocks: residual + transformer blocks per level going down (going up too).
        heads: attention heads.
        attention: per level, whether the blocks carry a spatial transformer (all by default).
    """

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (64, 128), context_dim: int = 64,
                 blocks: int = 1, heads: int = 4, attention: Sequence[bool] | None = None):
        super().__init__()
        channels = list(channels)
        attention = [True] * len(channels) if attention is None else list(attention)
        if len(attention) != len(channels):
            raise ValueError(f"attention has {len(attention)} entries for {len(channels)} levels")
        self.levels, self.time_dim = len(channels), 4 * channels[0]
        self.time_mlp = nn.Sequential(nn.Linear(channels[0], self.time_dim), nn.SiLU(),
                                      nn.Linear(self.time_dim, self.time_dim))
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)

        def stage(i: int, first_in: int, skip: int) -> nn.ModuleList:  # `blocks` (ResBlock, transformer) pairs
            c = channels[i]
            return nn.ModuleList(nn.ModuleList([
                ResBlock((first_in if b == 0 else c) + skip, c, self.time_dim),
                SpatialTransformer(c, context_dim, heads) if attention[i] else nn.Identity()]) for b in range(blocks))

        self.down, self.downsample, prev = nn.ModuleList(), nn.ModuleList(), channels[0]
        for i, c in enumerate(channels):
            self.down.append(stage(i, prev, 0))
            if i < self.levels - 1:
                self.downsample.append(ResBlock(c, c, self.time_dim, "down"))
            prev = c
        top = channels[-1]
        self.mid1 = ResBlock(top, top, self.time_dim)
        self.mid_attn = SpatialTransformer(top, context_dim, heads)
        self.mid2 = ResBlock(top, top, self.time_dim)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(self.levels)):
            self.up.append(stage(i, prev, channels[i]))  # each block takes (h, skip) concatenated
            prev = channels[i]
            if i > 0:
                self.upsample.append(ResBlock(channels[i], channels[i - 1], self.time_dim, "up"))
                prev = channels[i - 1]
        self.norm_out = group_norm(channels[0])
        self.conv_out = nn.Conv2d(channels[0], in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @staticmethod
    def _run_pair(pair: nn.ModuleList, h, temb, slots, slot_mask):
        res, attn = pair
        h = res(h, temb)
        return attn(h, slots, slot_mask) if isinstance(attn, SpatialTransformer) else h

    def forward(self, x: torch.Tensor, t: torch.Tensor, slots: torch.Tensor,
                slot_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, H, W), t (B,) int, slots (B, K, D), slot_mask (B, K) bool -> eps (B, C, H, W)."""
        if x.shape[-1] % 2 ** (self.levels - 1) or x.shape[-2] % 2 ** (self.levels - 1):
            raise ValueError(f"UNet input {tuple(x.shape[-2:])} must divide by {2 ** (self.levels - 1)}")
        temb = self.time_mlp(timestep_embedding(t, self.conv_in.out_channels))  # (B, time_dim)
        h, skips = self.conv_in(x), []
        for i, stage in enumerate(self.down):
            for pair in stage:
                h = self._run_pair(pair, h, temb, slots, slot_mask)
                skips.append(h)
            if i < self.levels - 1:
                h = self.downsample[i](h, temb)  # (B, C_i, H / 2^(i+1), W / 2^(i+1))
        h = self.mid2(self.mid_attn(self.mid1(h, temb), slots, slot_mask), temb)
        for j, stage in enumerate(self.up):
            for pair in stage:
                h = self._run_pair(pair, torch.cat([h, skips.pop()], 1), temb, slots, slot_mask)
            if j < self.levels - 1:
                h = self.upsample[j](h, temb)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, C, H, W)
