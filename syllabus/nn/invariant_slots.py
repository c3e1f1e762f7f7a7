"""Invariant Slot Attention (Biza et al. 2023, translation and scale), written here.

Each slot carries a frame: the centre and spread of its attention over the input grid. Keys
and values see the grid in the slot's own frame, (coordinate - centre) / spread, so a slot
attends to an object the same way wherever it is and however large; the inputs carry no
absolute position. The frames are recomputed from each round's attention; a last round
updates only the frames, which are appended to the slots for a decoder that draws in them
(``BroadcastDecoder(relative=True)``).

Public API:
    InvariantSlotAttention(num_slots, dim, grid_hw, iters=3, hidden_dim=128, eps=1e-8,
                           implicit_grad=False, init="gaussian", init_scale=0.1)
        (B, N, D) inputs -> slots with frames (B, K, D + 4), attention of every update (T, B, K, N)
"""

from __future__ import annotations

import torch
from torch import nn

from syllabus.nn.slot_attention import SlotAttention, centred_grid, slot_frames


class InvariantSlotAttention(SlotAttention):
    """Slot attention whose keys and values are relative to each slot's frame.

    Args:
        num_slots, dim, iters, hidden_dim, eps, implicit_grad, init: as ``SlotAttention``.
        grid_hw: (h, w) of the N inputs, row-major.
        init_scale: the spread every slot starts with (centred on the image): 0.1 is a small
            object on a [-1, 1] grid.
    """

    def __init__(self, num_slots: int, dim: int, grid_hw: tuple[int, int], iters: int = 3, hidden_dim: int = 128,
                 eps: float = 1e-8, implicit_grad: bool = False, init: str = "gaussian", init_scale: float = 0.1):
        super().__init__(num_slots, dim, iters, hidden_dim, eps, implicit_grad, init)
        self.grid_hw, self.init_scale = tuple(grid_hw), init_scale
        self.register_buffer("grid", centred_grid(*grid_hw).reshape(-1, 2), persistent=False)  # (N, 2)
        self.grid_proj = nn.Linear(2, dim)
        hidden = max(dim, hidden_dim)
        self.grid_mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def relative(self, x: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Inputs' keys or values (B, N, D) seen from each slot's frame (B, K, 4): (B, K, N, D)."""
        rel = (self.grid - frames[:, :, None, :2]) / frames[:, :, None, 2:]  # (B, K, N, 2)
        return self.grid_mlp(x[:, None] + self.grid_proj(rel))

    def attend(self, slots: torch.Tensor, k: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Attention (B, K, N), softmax over slots, of slots (B, K, D) on relative keys."""
        q = self.to_q(self.norm_slots(slots)) * self.scale  # (B, K, D)
        return torch.einsum("bkd,bknd->bkn", q, self.relative(k, frames)).softmax(dim=1)

    def update(self, slots: torch.Tensor, attn: torch.Tensor, v: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """GRU and residual MLP on the attention-weighted mean of the relative values: (B, K, D)."""
        b, n_slots, d = slots.shape
        weights = attn + self.eps
        weights = weights / weights.sum(-1, keepdim=True)  # (B, K, N)
        updates = torch.einsum("bkn,bknd->bkd", weights, self.relative(v, frames))
        slots = self.gru(updates.reshape(-1, d), slots.reshape(-1, d)).reshape(b, n_slots, d)
        return slots + self.mlp(self.norm_mlp(slots))

    def forward(self, inputs: torch.Tensor, num_slots: int | None = None,
                slots: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (B, N, D) -> slots and frames (B, K, D + 4), attention of each update (T, B, K, N)."""
        inputs = self.norm_inputs(inputs)
        k, v = self.to_k(inputs), self.to_v(inputs)  # (B, N, D) each
        start = self.init_slots(inputs.shape[0], num_slots, inputs) if slots is None else slots
        frames = start.new_tensor([0.0, 0.0, self.init_scale, self.init_scale]).expand(*start.shape[:2], 4)

        def step(slots: torch.Tensor, frames: torch.Tensor):
            attn = self.attend(slots, k, frames)  # (B, K, N)
            return self.update(slots, attn, v, frames), attn, slot_frames(attn, self.grid_hw)

        slots, frames, attns = self.iterate(start, step, frames)
        frames = slot_frames(self.attend(slots, k, frames), self.grid_hw)  # the last round moves only the frames
        return torch.cat([slots, frames], -1), attns
