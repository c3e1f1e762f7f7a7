"""Slot Attention (Locatello et al. 2020), written here.

Public API:
    SlotAttention(num_slots, dim, iters=3, hidden_dim=128, eps=1e-8, implicit_grad=False, init="gaussian")
        (B, N, D) inputs -> slots (B, K, D) and the attention of every iteration (T, B, K, N)
    slot_frames(attn, hw) -> (B, K, 4): each slot's centre and spread on the [-1, 1] grid
    SoftPositionEmbed(dim, resolution): adds a learned map of the 2D coordinate grid
    SlotEncoder(num_slots, slot_dim=64, iters=3, channels=64, resolution=(64, 64), strides=(1, 1, 1, 1),
                ..., frames="none")
        images (B, 3, H, W) -> slots (B, K, D) (D + 4 with frames), last iteration's attention
        (B, K, N); ``forward_all`` also gives every iteration's attention; ``feature_hw`` is the (h, w) of N,
        ``slot_width`` the width of its slots (D + 4 with either kind of frames)
    BroadcastDecoder(slot_dim, resolution, init_res=8, channels=64, out_res=None, depth=2, relative=False)
        slots (B, K, D) -> per-slot RGB (B, K, 3, H, W) and mask logits (B, K, 1, H, W); relative:
        the slots end with their frames and the grid is drawn in each slot's frame
    SlotAttentionAutoEncoder(encoder, decoder)
        images -> {"recon", "masks", "contents", "slots", "attn"}; ``decode(slots)`` alone
        (masks are a softmax over slots; the image is the sum of masks x contents)

Images are expected roughly in [-1, 1]; the model does not normalise them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

INITS = ("gaussian", "learned", "kmeans")
FRAMES = ("none", "attention", "invariant")  # where a slot's frame comes from (see SlotEncoder)


@torch.no_grad()
def kmeans_centres(x: torch.Tensor, k: int, iters: int = 5) -> torch.Tensor:
    """k-means of each row's points, batched: x (B, N, D) -> centres (B, k, D).

    k-means++ seeding (each next seed drawn with probability proportional to the squared
    distance to the nearest seed so far, from torch's generator), then `iters` Lloyd steps; a
    centre left without points keeps its place.
    """
    b, n, _ = x.shape
    rows = torch.arange(b, device=x.device)
    seeds = [x[rows, torch.randint(n, (b,), device=x.device)]]  # (B, D) each
    dist = ((x - seeds[0][:, None]) ** 2).sum(-1)  # (B, N): squared distance to the nearest seed
    for _ in range(k - 1):
        pick = torch.multinomial(dist.clamp_min(1e-12), 1).squeeze(1)  # (B,)
        seeds.append(x[rows, pick])
        dist = torch.minimum(dist, ((x - seeds[-1][:, None]) ** 2).sum(-1))
    centres = torch.stack(seeds, 1)  # (B, k, D)
    for _ in range(iters):
        member = F.one_hot(torch.cdist(x, centres).argmin(-1), k).to(x.dtype)  # (B, N, k)
        counts = member.sum(1).unsqueeze(-1)  # (B, k, 1)
        centres = torch.where(counts > 0, member.transpose(1, 2) @ x / counts.clamp_min(1), centres)
    return centres


class SlotAttention(nn.Module):
    """Iterative attention in which slots compete for inputs (softmax over slots).

    Args:
        num_slots: K, the number of slots.
        dim: D, the width of the inputs and the slots.
        iters: T, the number of attention iterations.
        hidden_dim: width of the residual MLP (at least ``dim``).
        eps: added to the attention before its weighted mean over inputs.
        implicit_grad: run the first T-1 iterations without gradient and back-propagate
            through the last one only (Chang et al. 2022), which steadies training.
        init: where the slots start. "gaussian": K samples of the learned Gaussian (the
            paper); "learned": K learned vectors, one per slot (BO-QSA, Jia et al. 2023), which
            with `implicit_grad` get the last iteration's gradient straight through; "kmeans":
            the centres of a k-means of the image's own (normalised) inputs (`kmeans_centres`),
            so the slots start on distinct regions of the image.
    """

    def __init__(self, num_slots: int, dim: int, iters: int = 3, hidden_dim: int = 128, eps: float = 1e-8,
                 implicit_grad: bool = False, init: str = "gaussian"):
        super().__init__()
        self.num_slots, self.dim, self.iters, self.eps = num_slots, dim, iters, eps
        if init not in INITS:
            raise ValueError(f"slot init {init!r}; valid: {', '.join(INITS)}")
        self.implicit_grad, self.init = implicit_grad, init
        if init == "learned":
            self.slots_init = nn.Parameter(nn.init.xavier_uniform_(torch.empty(1, num_slots, dim)))  # (1, K, D)
        self.scale = dim**-0.5
        # Glorot-uniform, as the paper's code: sigma starts near 1, so the K slots start apart
        self.slots_mu = nn.Parameter(nn.init.xavier_uniform_(torch.empty(1, 1, dim)))
        self.slots_log_sigma = nn.Parameter(nn.init.xavier_uniform_(torch.empty(1, 1, dim)))
        self.norm_inputs, self.norm_slots, self.norm_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.gru = nn.GRUCell(dim, dim)
        hidden = max(dim, hidden_dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def init_slots(self, batch: int, num_slots: int | None = None, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """K slots per image sampled from N(mu, diag(sigma^2)), both learned, the K learned
        starting vectors, or k-means centres of the normalised inputs (B, N, D). (B, K, D)."""
        k = num_slots or self.num_slots
        if self.init == "kmeans":
            if inputs is None:
                raise ValueError("k-means slot starts need the inputs (B, N, D)")
            return kmeans_centres(inputs.detach(), k)
        if self.init == "learned":
            if k != self.num_slots:
                raise ValueError(f"learned slot initialisations are {self.num_slots}, not {k}")
            return self.slots_init.expand(batch, -1, -1)
        mu = self.slots_mu.expand(batch, k, -1)
        noise = torch.randn(batch, k, self.dim, device=mu.device, dtype=mu.dtype)
        return mu + self.slots_log_sigma.exp() * noise

    def step(self, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One iteration: slots (B, K, D), keys and values (B, N, D) -> new slots, attention (B, K, N)."""
        b, n_slots, d = slots.shape
        q = self.to_q(self.norm_slots(slots)) * self.scale  # (B, K, D)
        attn = torch.bmm(q, k.transpose(1, 2)).softmax(dim=1)  # (B, K, N): slots compete for each input
        weights = attn + self.eps
        weights = weights / weights.sum(-1, keepdim=True)  # (B, K, N): a weighted mean over inputs
        updates = torch.bmm(weights, v)  # (B, K, D)
        slots = self.gru(updates.reshape(-1, d), slots.reshape(-1, d)).reshape(b, n_slots, d)
        return slots + self.mlp(self.norm_mlp(slots)), attn

    def forward(self, inputs: torch.Tensor, num_slots: int | None = None,
                slots: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (B, N, D) -> slots (B, K, D), attention of each iteration (T, B, K, N).

        ``slots`` (B, K, D) replaces the random initialisation when given.
        """
        inputs = self.norm_inputs(inputs)
        k, v = self.to_k(inputs), self.to_v(inputs)  # (B, N, D) each
        start = self.init_slots(inputs.shape[0], num_slots, inputs) if slots is None else slots
        slots, _, attns = self.iterate(start, lambda s, _: (*self.step(s, k, v), None))
        return slots, attns

    def iterate(self, start: torch.Tensor, step, carry: torch.Tensor | None = None):
        """T rounds of ``step(slots, carry) -> (slots, attention (B, K, N), carry)`` from ``start``
        (B, K, D); ``carry`` is state that rides along (None, or e.g. the slots' frames).

        With ``implicit_grad`` the first T - 1 rounds run without gradient and the last starts
        from their detached result (learned starts get its gradient straight through).
        Returns slots, carry, attention of every round (T, B, K, N).
        """
        slots, attns = start, []
        for t in range(self.iters):
            last = t == self.iters - 1
            with torch.set_grad_enabled(torch.is_grad_enabled() and (last or not self.implicit_grad)):
                if last and self.implicit_grad:
                    through = start - start.detach() if self.init == "learned" else 0  # straight-through term
                    slots = slots.detach() + through
                    carry = carry.detach() if carry is not None else None
                slots, attn, carry = step(slots, carry)
            attns.append(attn)
        return slots, carry, torch.stack(attns)


def coordinate_grid(h: int, w: int, device=None) -> torch.Tensor:
    """The four ramps (y, x, 1 - y, 1 - x) in [0, 1]. (H, W, 4)."""
    ys, xs = torch.linspace(0, 1, h, device=device), torch.linspace(0, 1, w, device=device)
    y, x = torch.meshgrid(ys, xs, indexing="ij")  # (H, W) each
    return torch.stack([y, x, 1 - y, 1 - x], -1)


def centred_grid(h: int, w: int, device=None) -> torch.Tensor:
    """(y, x) coordinates in [-1, 1], corner to corner. (H, W, 2)."""
    ys, xs = torch.linspace(-1, 1, h, device=device), torch.linspace(-1, 1, w, device=device)
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1)


def slot_frames(attn: torch.Tensor, hw: tuple[int, int], min_scale: float = 0.05) -> torch.Tensor:
    """Each slot's frame from its attention (B, K, N) over an (h, w) grid: (B, K, 4) = centre (y, x)
    and spread (y, x), the attention-weighted mean and standard deviation of coordinates in [-1, 1]
    (as Invariant Slot Attention, Biza et al. 2023)."""
    grid = centred_grid(*hw, device=attn.device).reshape(-1, 2)  # (N, 2)
    weights = attn / attn.sum(-1, keepdim=True).clamp_min(1e-8)  # (B, K, N)
    centre = weights @ grid  # (B, K, 2)
    spread = (weights @ grid.square() - centre.square()).clamp_min(min_scale**2).sqrt()  # (B, K, 2)
    return torch.cat([centre, spread], -1)


class SoftPositionEmbed(nn.Module):
    """Adds a learned linear map of the coordinate grid to channels-last features (B, H, W, C)."""

    def __init__(self, dim: int, resolution: tuple[int, int]):
        super().__init__()
        self.proj = nn.Linear(4, dim)
        self.register_buffer("grid", coordinate_grid(*resolution), persistent=False)  # (H, W, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(self.grid)


class SlotEncoder(nn.Module):
    """CNN -> 2D position embedding -> flatten -> LayerNorm + MLP -> Slot Attention.

    Args:
        num_slots: K.
        slot_dim: D, the width of features and slots.
        iters: T, slot-attention iterations.
        channels: width of the CNN.
        resolution: (H, W) of the input images.
        strides: one per convolution; the paper's (1, 1, 1, 1) keeps N = H W, (2, 2, 1, 1)
            gives N = H W / 16 (cheap on a CPU).
        kernel_size: of every convolution (5 in the paper).
        hidden_dim: width of the slot MLP.
        implicit_grad, init: see ``SlotAttention``.
        frames: "none" (the paper); "attention": append each slot's frame (``slot_frames`` of
            the last attention), so the slots are (B, K, D + 4), for a decoder that draws in the
            slot's own frame; "invariant": Invariant Slot Attention (``invariant_slots``), whose
            keys and values are in the slots' frames too, with no absolute position embedding.
    """

    def __init__(self, num_slots: int, slot_dim: int = 64, iters: int = 3, channels: int = 64,
                 resolution: tuple[int, int] = (64, 64), strides: tuple[int, ...] = (1, 1, 1, 1),
                 kernel_size: int = 5, hidden_dim: int = 128, implicit_grad: bool = False, init: str = "gaussian",
                 frames: str = "none"):
        super().__init__()
        if frames not in FRAMES:
            raise ValueError(f"slot frames {frames!r}; valid: {', '.join(FRAMES)}")
        self.frames = frames
        layers, c_in, (h, w) = [], 3, resolution
        for stride in strides:
            layers += [nn.Conv2d(c_in, channels, kernel_size, stride=stride, padding=kernel_size // 2), nn.ReLU()]
            c_in, h, w = channels, math.ceil(h / stride), math.ceil(w / stride)
        self.cnn = nn.Sequential(*layers)
        self.feature_hw = (h, w)
        self.pos = SoftPositionEmbed(channels, self.feature_hw) if frames != "invariant" else nn.Identity()
        self.norm = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, slot_dim), nn.ReLU(), nn.Linear(slot_dim, slot_dim))
        if frames == "invariant":
            from syllabus.nn.invariant_slots import InvariantSlotAttention  # it builds on SlotAttention

            self.slot_attention = InvariantSlotAttention(num_slots, slot_dim, self.feature_hw, iters, hidden_dim,
                                                         implicit_grad=implicit_grad, init=init)
        else:
            self.slot_attention = SlotAttention(num_slots, slot_dim, iters, hidden_dim, implicit_grad=implicit_grad,
                                                init=init)

    @property
    def slot_width(self) -> int:
        """The width of the slots it gives: D, or D + 4 when they end with their frames (both frame kinds)."""
        return self.slot_attention.dim + (4 if self.frames != "none" else 0)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> position-aware input features (B, N, D)."""
        x = self.cnn(images).permute(0, 2, 3, 1)  # (B, h, w, C)
        x = self.pos(x).flatten(1, 2)  # (B, N, C)
        return self.mlp(self.norm(x))  # (B, N, D)

    def forward_all(self, images: torch.Tensor, num_slots: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images -> slots (B, K, D) (D + 4 with frames), the attention of every iteration (T, B, K, N)."""
        slots, attns = self.slot_attention(self.features(images), num_slots)
        if self.frames == "attention":
            slots = torch.cat([slots, slot_frames(attns[-1], self.feature_hw)], -1)  # (B, K, D + 4)
        return slots, attns

    def forward(self, images: torch.Tensor, num_slots: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 3, H, W) -> slots (B, K, D), last iteration's attention (B, K, N)."""
        slots, attns = self.forward_all(images, num_slots)
        return slots, attns[-1]


class BroadcastDecoder(nn.Module):
    """Spatial broadcast decoder (Watters et al. 2019): each slot tiled on a grid, upsampled.

    Args:
        slot_dim: D.
        resolution: (H, W) of the images; each side must be init_res times a power of two.
        init_res: side of the grid each slot is broadcast onto.
        channels: width of the transposed convolutions.
        out_res: side at which the convolutions stop (default: the image's); below it, the
            four output channels are upsampled bilinearly to the image (cheap on a CPU).
        depth: 3 x 3 convolutions at ``out_res`` (the last one gives the four channels).
        relative: the slots end with their frames (centre, spread; ``slot_frames``), and the
            grid the decoder sees is in each slot's frame, (coordinate - centre) / spread, so
            one shape is drawn the same way wherever it is (Biza et al. 2023).
    """

    def __init__(self, slot_dim: int, resolution: tuple[int, int] = (64, 64), init_res: int = 8, channels: int = 64,
                 out_res: int | None = None, depth: int = 2, relative: bool = False):
        super().__init__()
        self.relative = relative
        out_res = out_res or resolution[0]
        ups = math.log2(out_res / init_res)
        if resolution[0] != resolution[1] or ups != int(ups) or ups < 0 or resolution[0] % out_res:
            raise ValueError(f"decoder resolution {resolution} must be square, out_res={out_res} times an integer, "
                             f"out_res init_res={init_res} times 2^k")
        self.init_res, self.resolution = init_res, tuple(resolution)
        if relative:  # a learned map of the grid in each slot's frame
            self.rel = nn.Linear(2, slot_dim)
            self.register_buffer("grid", centred_grid(init_res, init_res), persistent=False)  # (r, r, 2)
        else:
            self.pos = SoftPositionEmbed(slot_dim, (init_res, init_res))
        layers, c_in = [], slot_dim
        for _ in range(int(ups)):
            layers += [nn.ConvTranspose2d(c_in, channels, 5, stride=2, padding=2, output_padding=1), nn.ReLU()]
            c_in = channels
        for _ in range(depth - 1):
            layers += [nn.Conv2d(c_in, channels, 3, padding=1), nn.ReLU()]
            c_in = channels
        layers += [nn.Conv2d(c_in, 4, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Slots (B, K, D) (D + 4 if relative) -> contents (B, K, 3, h, w), mask logits (B, K, 1, h, w)
        at ``out_res``."""
        b, k = slots.shape[:2]
        if self.relative:
            slots, frame = slots[..., :-4], slots[..., -4:].reshape(b * k, 1, 1, 4)
        d = slots.shape[-1]
        x = slots.reshape(b * k, 1, 1, d).expand(-1, self.init_res, self.init_res, -1)  # (BK, r, r, D)
        if self.relative:  # the grid in each slot's frame: (BK, r, r, 2)
            x = x + self.rel((self.grid - frame[..., :2]) / frame[..., 2:])
        else:
            x = self.pos(x)
        x = x.permute(0, 3, 1, 2)  # (BK, D, r, r)
        out = self.net(x)  # (BK, 4, h, w)
        out = out.reshape(b, k, *out.shape[1:])
        return out[:, :, :3], out[:, :, 3:]


class SlotAttentionAutoEncoder(nn.Module):
    """Encode into slots, decode each slot, mix the contents with masks softmaxed over slots."""

    def __init__(self, encoder: SlotEncoder, decoder: BroadcastDecoder):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def decode(self, slots: torch.Tensor) -> dict[str, torch.Tensor]:
        """Slots (B, K, D) -> recon (B, 3, H, W), masks (B, K, 1, H, W), contents (B, K, 3, h, w).

        When the decoder stops below the image size, the mixed image and the masks are
        upsampled bilinearly to (H, W); the contents stay at the decoder's (h, w).
        """
        contents, logits = self.decoder(slots)
        masks = logits.softmax(dim=1)  # (B, K, 1, h, w), over slots
        recon = (masks * contents).sum(1)  # (B, 3, h, w)
        size = self.decoder.resolution
        if recon.shape[-2:] != size:
            recon = F.interpolate(recon, size=size, mode="bilinear", align_corners=False)
            masks = F.interpolate(masks.flatten(0, 1), size=size, mode="bilinear", align_corners=False)
            masks = masks.reshape(*contents.shape[:2], 1, *size)
        return {"recon": recon, "masks": masks, "contents": contents}

    @staticmethod
    def slot_log_likelihoods(x: torch.Tensor, out: dict, var: torch.Tensor | float) -> torch.Tensor:
        """log m_k + log N(x; c_k, var I) per slot and pixel, up to a constant: (B, K, H, W).

        The decoder read as a spatial mixture (slot k draws a pixel with probability m_k, its
        mask, then its colour around c_k, its contents upsampled to the image); x (B, 3, H, W).
        """
        b, k = out["contents"].shape[:2]
        contents = F.interpolate(out["contents"].flatten(0, 1), size=x.shape[-2:], mode="bilinear",
                                 align_corners=False).reshape(b, k, *x.shape[1:])  # (B, K, 3, H, W)
        dist = (x[:, None] - contents).square().sum(2)  # (B, K, H, W)
        return out["masks"].squeeze(2).clamp_min(1e-8).log() - dist / (2 * var)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images (B, 3, H, W) -> decode's dict plus slots (B, K, D) and attention (T, B, K, N)."""
        slots, attns = self.encoder.forward_all(images)
        return {**self.decode(slots), "slots": slots, "attn": attns}
