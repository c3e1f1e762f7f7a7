"""A user's weight file, read safely and checked against a model, every failure as one line.

Public API:
    read_weights(path, key) -> the state dict (name -> tensor) in a weights-only checkpoint,
        bare or under "state_dict" / "model" / "vae"; a missing, unreadable or tensor-less file
        raises one UsageError naming `key` (the config key that pointed at it) and the file
    fit_weights(model, state, key, path, what) -> loads `state` into `model`, or raises one
        UsageError listing the missing and unexpected keys and the shape mismatches
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from syllabus.errors import UsageError


def _state_dict_of(obj: object) -> dict[str, torch.Tensor] | None:
    """The state dict inside a loaded checkpoint: itself, or under "state_dict" / "model" / "vae"."""
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, dict):
        for name in ("state_dict", "model", "vae"):
            if name in obj:
                return _state_dict_of(obj[name])
    return None


def read_weights(path: str | Path, key: str) -> dict[str, torch.Tensor]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"{key}={path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refused or a corrupt file: one line either way
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""  # torch's messages run to many lines
        raise UsageError(f"{key}={path} cannot be read as a weights-only checkpoint ({type(e).__name__}: {first})"
                         ) from None
    state = _state_dict_of(obj)
    if state is None:
        raise UsageError(f"{key}={path} holds no state dict of tensors (looked at the top level and under "
                         f"'state_dict', 'model', 'vae')")
    return state


def _listing(keys: list[str], limit: int = 8) -> str:
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def fit_weights(model: nn.Module, state: dict[str, torch.Tensor], key: str, path: str | Path, what: str) -> None:
    """Load `state` into `model` (strict), or one UsageError: "{key}={path} does not fit {what}: ..."."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in set(own) & set(state)
                    if state[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        parts = [f"missing {len(missing)}: {_listing(missing)}" if missing else "",
                 f"unexpected {len(unexpected)}: {_listing(unexpected)}" if unexpected else "",
                 f"shape mismatch {len(shapes)} (file vs model): {_listing(shapes)}" if shapes else ""]
        raise UsageError(f"{key}={path} does not fit {what}: " + "; ".join(p for p in parts if p))
    model.load_state_dict(state)
