"""Scoring a trained slot-attention model: segmentation, baselines, compositional generation.

Runs on the best checkpoint after training; returns the summary keys and writes the arrays
the report draws to `pictures.npz` (images, reconstructions, per-slot masks and contents,
each iteration's attention, composed scenes).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from syllabus.explain.segment_baselines import BASELINES
from syllabus.explain.slots import cluster_slots, collect_slots, compose_slot_sets, decode_images, feature_space
from syllabus.metrics.ari import masks_to_ids, segment_scores
from syllabus.metrics.frechet import fid_from_features
from syllabus.nn.slot_attention import SlotAttentionAutoEncoder
from syllabus.runs import Run, is_main_process, save_npz

PICTURES = "pictures.npz"
ANCHORS = [
    {"source": "Locatello et al. 2020, Slot Attention on CLEVR6", "metric": "FG-ARI", "value": 98.8},
    {"source": "Karazija et al. 2021, Slot Attention on CLEVRTex", "metric": "mIoU", "value": 22.6},
    {"source": "a public solution of this assignment, CLEVRTex val", "metric": "ARI", "value": 55.4},
    {"source": "a public solution of this assignment, CLEVRTex val", "metric": "FID", "value": 161},
]


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def posterior_ids(x: torch.Tensor, out: dict) -> torch.Tensor:
    """Each pixel to the slot most likely to have drawn it: (B, H, W).

    Reads the decoder as a spatial mixture: slot k draws a pixel with probability m_k (its mask)
    and then its colour from N(c_k, s^2 I) (its contents, upsampled to the image), with s^2 the
    image's own reconstruction MSE (the maximum-likelihood variance). The segment is the argmax
    over slots of log m_k - |x - c_k|^2 / (2 s^2): the masks sharpened by the observed colours.
    """
    var = (out["recon"] - x).square().mean((1, 2, 3)).clamp_min(1e-6)[:, None, None, None]  # (B, 1, 1, 1)
    return SlotAttentionAutoEncoder.slot_log_likelihoods(x, out, var).argmax(1)  # x (B, 3, H, W) in [-1, 1]


@torch.no_grad()
def segment_batches(model, loader) -> dict:
    """Reconstruction MSE and hard segments (from the masks, and the posterior assignment) over a
    loader of (image in [0, 1], mask) batches."""
    device, trues, preds, posts, sq, n = _device(model), [], [], [], 0.0, 0
    for images, masks in loader:
        x = images.to(device) * 2 - 1
        out = model(x)
        sq += float(F.mse_loss(out["recon"], x, reduction="sum")) / x[0].numel()
        n += len(x)
        preds.append(masks_to_ids(out["masks"]).cpu())
        posts.append(posterior_ids(x, out).cpu())
        trues.append(masks)
    return {"loss": sq / max(n, 1), "true": torch.cat(trues), "pred": torch.cat(preds), "posterior": torch.cat(posts)}


def _stack(ds, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n items of a dataset: images (n, 3, H, W) in [0, 1], masks (n, H, W)."""
    items = [ds[i] for i in range(min(n, len(ds)))]
    return torch.stack([x for x, _ in items]), torch.stack([m for _, m in items])


def baseline_table(model, images: torch.Tensor, masks: torch.Tensor, k: int, seed: int, batch: int) -> list[dict]:
    """Ours and the three learning-free baselines, scored on the same images."""
    ours = segment_batches(model, DataLoader(list(zip(images, masks)), batch_size=batch))
    rows = [{"method": "slot attention (ours): masks", "kind": "ours", **segment_scores(masks, ours["pred"]),
             "seconds": None},
            {"method": "slot attention (ours): posterior assignment", "kind": "ours",
             **segment_scores(masks, ours["posterior"]), "seconds": None}]
    for name, fn in BASELINES.items():
        start = time.perf_counter()
        pred = fn(images, k, seed)
        rows.append({"method": name, "kind": "baseline", **segment_scores(masks, pred),
                     "seconds": time.perf_counter() - start})
    return rows


@torch.no_grad()
def generation(model, train_ds, val_ds, cfg) -> tuple[dict, torch.Tensor]:
    """Compose new scenes from a k-means slot library; Fréchet distances to val images."""
    e, k = cfg.eval, cfg.model.num_slots
    library_images, _ = _stack(train_ds, e.library_images)
    library = collect_slots(model.encoder, library_images * 2 - 1, e.batch_size)  # (M K, D)
    labels, _ = cluster_slots(library, k, seed=cfg.seed)
    sets = compose_slot_sets(library, labels, e.n_generate, k, torch.Generator().manual_seed(cfg.seed))
    generated = ((decode_images(model, sets, e.batch_size) + 1) / 2).clamp(0, 1)  # (n, 3, H, W)
    real, _ = _stack(val_ds, e.n_generate)
    recon = torch.cat([model(real[i: i + e.batch_size].to(_device(model)) * 2 - 1)["recon"].cpu()
                       for i in range(0, len(real), e.batch_size)])
    recon = ((recon + 1) / 2).clamp(0, 1)  # (n, 3, H, W)
    space = feature_space(prefer_inception=e.inception)
    f_real = space.features(real)
    out = {"fd_generated": fid_from_features(space.features(generated), f_real),
           "fd_reconstruction": fid_from_features(space.features(recon), f_real),
           "feature_space": space.name, "inception": space.is_inception,
           "n_generate": len(generated), "n_real": len(real), "library_slots": len(library)}
    return out, generated


@torch.no_grad()
def pictures(model, images: torch.Tensor, masks: torch.Tensor) -> dict[str, np.ndarray]:
    """What the report draws for a few images (all float16 in [0, 1] except ids)."""
    x = images.to(_device(model)) * 2 - 1
    out = model(x)
    size = images.shape[-2:]
    contents = F.interpolate(out["contents"].flatten(0, 1), size=size, mode="bilinear", align_corners=False)
    contents = ((contents.reshape(*out["contents"].shape[:3], *size) + 1) / 2).clamp(0, 1)  # (B, K, 3, H, W)
    t, b, k, _ = out["attn"].shape
    h, w = model.encoder.feature_hw
    return {"images": images.numpy(), "true": masks.numpy().astype(np.uint8),
            "recon": ((out["recon"].cpu() + 1) / 2).clamp(0, 1).numpy(),
            "masks": out["masks"].squeeze(2).cpu().numpy(), "contents": contents.cpu().numpy(),
            "posterior": posterior_ids(x, out).cpu().numpy().astype(np.uint8),
            "attn": out["attn"].reshape(t, b, k, h, w).cpu().numpy()}


def evaluate_model(model, splits: dict, loaders: dict[str, DataLoader], cfg, run: Run) -> dict:
    """Every post-training score (summary keys); writes `pictures.npz` for the report."""
    summary: dict = {}
    for split, loader in loaders.items():
        out = segment_batches(model, loader)
        for tag, pred in ((split, out["pred"]), (f"{split}/posterior", out["posterior"])):
            summary.update({f"{tag}/{m}": v for m, v in segment_scores(out["true"], pred).items()})
        summary[f"{split}/loss"] = out["loss"]
    images, masks = _stack(splits["val"], cfg.eval.n_baseline)
    rows = baseline_table(model, images, masks, cfg.model.num_slots, cfg.seed, cfg.eval.batch_size)
    summary["baselines"], summary["n_baseline"] = rows, len(images)
    summary["best_baseline/fg_ari"] = max(r["fg_ari"] for r in rows if r["kind"] == "baseline")
    gen, generated = generation(model, splits["train"], splits["val"], cfg)
    summary.update(gen)
    if is_main_process():
        show = pictures(model, images[: cfg.eval.n_show], masks[: cfg.eval.n_show])
        save_npz(run.path / PICTURES, {**{k: v.astype(np.float16) if v.dtype.kind == "f" else v
                                          for k, v in show.items()},
                                       "generated": generated[:16].numpy().astype(np.float16)})
    return summary
