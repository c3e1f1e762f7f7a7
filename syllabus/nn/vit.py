"""A small Vision Transformer (Dosovitskiy et al. 2021) written here, and transformers' ViT behind
the same interface.

    image (B, C, H, W) -> patches (B, N, D) by a stride-p convolution, + learned position embeddings,
    a learned CLS token in front (B, 1+N, D), `depth` pre-norm blocks
        x = x + Attn(LN(x));   x = x + MLP(LN(x))
    a final LayerNorm and a linear head on the CLS token (or on the mean of the patch tokens).

Both models share one interface, so the analyses (attention maps, rollout, masking, probes) work
on either:

    feats = model.forward_features(x, keep=None, attentions=True, hidden=True)
    logits = model.forward_head(feats)          # model(x, keep) does both

`keep` (B, K) are indices of the patches to keep (token dropping): the position embedding is added
before the gather, so a kept patch keeps its position and the order of `keep` does not matter.
Attention runs through `scaled_dot_product_attention` unless the weights are asked for; then the
unfused path computes softmax(q k^T / sqrt(d)) explicitly and returns it (B, heads, 1+K, 1+K).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from syllabus.errors import UsageError

POOLS = ("cls", "mean")


@dataclass
class ViTFeatures:
    """What `forward_features` returns.

    tokens: (B, 1+K, D) after the final LayerNorm; token 0 is CLS.
    hidden: the output of every block, (B, 1+K, D) each (empty unless asked).
    attentions: the softmax weights of every block, (B, heads, 1+K, 1+K) each (empty unless asked).
    keep: (B, K) the patch indices the tokens stand for, or None for all patches in order.
    """

    tokens: torch.Tensor
    hidden: list[torch.Tensor] = field(default_factory=list)
    attentions: list[torch.Tensor] = field(default_factory=list)
    keep: torch.Tensor | None = None


def gather_tokens(patches: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """The kept patch tokens. (B, N, D), (B, K) -> (B, K, D); all of them when keep is None."""
    if keep is None:
        return patches
    if keep.ndim != 2 or keep.shape[0] != patches.shape[0]:
        raise ValueError(f"keep must be (B, K) patch indices, got {tuple(keep.shape)}")
    return patches.gather(1, keep[..., None].expand(-1, -1, patches.shape[-1]))


class Attention(nn.Module):
    """Multi-head self-attention; the softmax weights on request.

    Args:
        dim: token width D (a multiple of `heads`).
        heads: number of heads h; each has width d = D / h.
        qkv_bias: bias in the query/key/value projection.
        fused: use `scaled_dot_product_attention` when the weights are not asked for.
    """

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, fused: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        self.heads, self.fused = heads, fused
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, N, D) -> output (B, N, D) and weights (B, h, N, N) or None."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (B, h, N, d) each
        if self.fused and not need_weights:
            out, weights = F.scaled_dot_product_attention(q, k, v), None  # (B, h, N, d)
        else:
            weights = ((q * self.scale) @ k.transpose(-2, -1)).softmax(-1)  # (B, h, N, N)
            out = weights @ v  # (B, h, N, d)
        return self.proj(out.transpose(1, 2).reshape(b, n, d)), weights


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x)).

    Args:
        dim: token width.
        heads: attention heads.
        mlp_ratio: hidden width of the MLP as a multiple of `dim`.
        dropout: after the attention and MLP outputs.
        fused: see `Attention`.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0, dropout: float = 0.0, fused: bool = True):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, fused=fused)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, weights = self.attn(self.norm1(x), need_weights)  # (B, N, D), (B, h, N, N) | None
        x = x + self.drop(a)
        return x + self.drop(self.mlp(self.norm2(x))), weights


STEMS = ("patch", "conv")
POS_INITS = ("sincos", "random")


def sincos_2d(grid: tuple[int, int], dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2-D sine-cosine position codes: sin and cos of the row, then of the column, a quarter
    of the channels each, at geometric frequencies (MAE's codes with the two halves swapped).
    -> (gh * gw, dim), tokens row-major."""
    if dim % 4:
        raise ValueError(f"sine-cosine position codes need dim a multiple of 4, got {dim}")
    omega = temperature ** -(torch.arange(dim // 4) / (dim // 4))  # (D/4,)
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    angles = [pos.flatten().float()[:, None] * omega for pos in (rows, cols)]  # (N, D/4) each
    return torch.cat([f(a) for a in angles for f in (torch.sin, torch.cos)], 1)  # (N, D)


def make_stem(kind: str, in_chans: int, dim: int, patch: int) -> nn.Module:
    """(B, C, H, W) -> (B, D, H/p, W/p): a patch embedding or a small convolutional stem."""
    if kind == "patch":
        return nn.Conv2d(in_chans, dim, patch, stride=patch)
    if kind != "conv" or patch < 2 or patch & (patch - 1):
        raise ValueError(f"stem must be one of {STEMS} (conv: patch size a power of 2), got {kind!r}, p={patch}")
    halvings = patch.bit_length() - 1  # log2(p) stride-2 convolutions
    widths = [max(dim // 2 ** (halvings - i), 8) for i in range(halvings + 1)]  # doubling up to D
    layers, width = [], in_chans
    for i, out in enumerate(widths):
        layers += [nn.Conv2d(width, out, 3, stride=1 if i == 0 else 2, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
        width = out
    return nn.Sequential(*layers, nn.Conv2d(width, dim, 1))


class TokenClassifier(nn.Module):
    """`forward(x, keep)` for a model with `forward_features` and `forward_head`; its patch grid."""

    patch_size: int
    grid: tuple[int, int]

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) -> (B, classes) logits."""
        return self.forward_head(self.forward_features(x, keep))


class ViT(TokenClassifier):
    """Vision Transformer classifier.

    Args:
        num_classes: output classes.
        image_size: input side H = W (a multiple of `patch_size`).
        patch_size: patch side p; the grid is (H/p, W/p).
        in_chans: input channels.
        dim: token width D.
        depth: number of blocks.
        heads: attention heads per block.
        mlp_ratio: MLP width as a multiple of D.
        dropout: in the blocks and after the embedding.
        pool: "cls" (the head reads the CLS token) or "mean" (the mean of the patch tokens).
        fused: fused attention when no weights are asked for.
        stem: "patch" (one p x p convolution of stride p, the paper's patch embedding) or "conv"
            (a 3x3 convolution, log2(p) 3x3 convolutions of stride 2 and a 1x1, after Xiao et al.
            2021: the same token grid, each token seeing a few pixels beyond its patch; it trains
            much faster on small data).
        pos_init: the learned position embeddings start at "sincos" (`sincos_2d`, which also
            trains faster on small data) or "random" (normal, std 0.02).
    """

    def __init__(self, num_classes: int, image_size: int = 32, patch_size: int = 4, in_chans: int = 3,
                 dim: int = 64, depth: int = 4, heads: int = 4, mlp_ratio: float = 2.0, dropout: float = 0.0,
                 pool: str = "cls", fused: bool = True, stem: str = "patch",
                 pos_init: str = "sincos"):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image size {image_size} is not a multiple of patch size {patch_size}")
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        self.patch_size, self.pool = patch_size, pool
        self.grid = (image_size // patch_size, image_size // patch_size)
        self.patch_embed = make_stem(stem, in_chans, dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + self.num_patches, dim) * 0.02)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout, fused) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if pos_init not in POS_INITS:
            raise ValueError(f"pos_init must be one of {POS_INITS}, got {pos_init!r}")
        if pos_init == "sincos":
            with torch.no_grad():
                self.pos_embed[0, 1:] = sincos_2d(self.grid, dim)

    def embed(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) -> (B, 1+K, D): CLS, then the kept patches, each with its position embedding."""
        patches = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed[:, 1:]  # (B, N, D)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(len(x), -1, -1)  # (B, 1, D)
        return self.drop(torch.cat([cls, gather_tokens(patches, keep)], 1))

    def forward_features(self, x: torch.Tensor, keep: torch.Tensor | None = None, attentions: bool = False,
                         hidden: bool = False) -> ViTFeatures:
        h = self.embed(x, keep)  # (B, 1+K, D)
        out = ViTFeatures(h, keep=keep)
        for block in self.blocks:
            h, weights = block(h, need_weights=attentions)
            if attentions:
                out.attentions.append(weights)
            if hidden:
                out.hidden.append(h)
        out.tokens = self.norm(h)
        return out

    def forward_head(self, feats: ViTFeatures) -> torch.Tensor:
        """(B, classes) logits from the CLS token or the mean of the patch tokens."""
        pooled = feats.tokens[:, 0] if self.pool == "cls" else feats.tokens[:, 1:].mean(1)  # (B, D)
        return self.head(pooled)


class HFViT(TokenClassifier):
    """transformers' `ViTForImageClassification` behind the interface of `ViT` (token dropping,
    attention weights, per-layer hidden states). Load it with `attn_implementation="eager"`:
    the fused implementations return no weights.

    Args:
        model: a `ViTForImageClassification` (transformers >= 5 layout: `model.vit.layers`).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        vit = model.vit
        if not hasattr(vit, "layers"):
            import transformers

            raise UsageError(f"vit-analysis needs transformers >= 5 (installed: {transformers.__version__})")
        self.model = model
        size, patch = vit.embeddings.patch_embeddings.image_size, vit.embeddings.patch_embeddings.patch_size
        self.patch_size = patch[0]
        self.grid = (size[0] // patch[0], size[1] // patch[1])

    def embed(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.model.vit.embeddings
        pos = emb.position_embeddings  # (1, 1+N, D)
        patches = emb.patch_embeddings(x) + pos[:, 1:]  # (B, N, D)
        cls = (emb.cls_token + pos[:, :1]).expand(len(x), -1, -1)  # (B, 1, D)
        return emb.dropout(torch.cat([cls, gather_tokens(patches, keep)], 1))

    def forward_features(self, x: torch.Tensor, keep: torch.Tensor | None = None, attentions: bool = False,
                         hidden: bool = False) -> ViTFeatures:
        h = self.embed(x, keep)  # (B, 1+K, D)
        out = ViTFeatures(h, keep=keep)
        for layer in self.model.vit.layers:
            if attentions:
                handle = layer.attention.register_forward_hook(lambda m, i, o: out.attentions.append(o[1]))
                try:
                    h = layer(h)
                finally:
                    handle.remove()
                if out.attentions[-1] is None:
                    raise UsageError("the ViT returns no attention weights; load it with attn_implementation='eager'")
            else:
                h = layer(h)
            if hidden:
                out.hidden.append(h)
        out.tokens = self.model.vit.layernorm(h)
        return out

    def forward_head(self, feats: ViTFeatures) -> torch.Tensor:
        return self.model.classifier(feats.tokens[:, 0])
