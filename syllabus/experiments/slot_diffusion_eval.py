"""Scoring a trained slot-diffusion model: segmentation from attention, sampling, composition.

Everything here runs on the best checkpoint after training and writes the arrays the report
draws to `pictures.npz`: test images with their attention segments, reconstructions sampled
from a real image's slots (ancestral DDPM and DDIM), compositional samples, and the
denoising strip.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from syllabus.explain.segment_baselines import BASELINES
from syllabus.explain.slots import cluster_slots, collect_slots, compose_slot_sets, feature_space, frechet_to
from syllabus.metrics.ari import segment_scores
from syllabus.nn.diffusion import SCHEDULERS, Scheduler
from syllabus.runs import Run, is_main_process

PICTURES = "pictures.npz"


def make_scheduler(cfg, kind: str = "ddpm", steps: int | None = None) -> Scheduler:
    """The `kind` ("ddpm" or "ddim") scheduler of `cfg.model`'s schedule, set to sample in `steps` steps."""
    m = cfg.model
    sched = SCHEDULERS[kind](m.timesteps, m.beta_start, m.beta_end, m.beta_schedule)
    sched.set_timesteps(steps or m.timesteps)
    return sched


def attention_segments(attn: torch.Tensor, feature_hw: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Slot-input attention (B, K, N) -> segment ids (B, H, W): resized bilinearly, argmax over slots."""
    maps = attn.reshape(*attn.shape[:2], *feature_hw)  # (B, K, h, w)
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False).argmax(1)


def _batches(x: torch.Tensor, size: int):
    return (x[i:i + size] for i in range(0, len(x), size))


def _float(images: torch.Tensor, model=None) -> torch.Tensor:
    """uint8 images -> floats in [0, 1], on the model's device when a model is given."""
    device = next(model.parameters()).device if model is not None else "cpu"
    return images.to(device).float() / 255


@torch.no_grad()
def segmentation(model, images: torch.Tensor, masks: torch.Tensor, batch_size: int, k: int, seed: int) -> dict:
    """ARI / FG-ARI / mIoU of the attention segments, and of the learning-free baselines, on the same images."""
    ids = []
    for x in _batches(images, batch_size):
        _, attn = model.slots(_float(x, model))
        ids.append(attention_segments(attn, model.encoder.feature_hw, tuple(x.shape[-2:])).cpu())
    ids = torch.cat(ids)  # (N, H, W)
    ours = segment_scores(masks.long(), ids)
    base = {name: segment_scores(masks.long(), fn(_float(images), k, seed)) for name, fn in BASELINES.items()}
    out = {f"test/{m}": v for m, v in ours.items()}
    out["baselines"] = base
    return out, ids


def _sample_images(model, slots: torch.Tensor, scheduler, seed: int, batch_size: int) -> tuple[torch.Tensor, float]:
    """Images (n, 3, H, W) in [0, 1] sampled from slot sets (n, K, D), and the seconds it took."""
    start, out = time.perf_counter(), []
    g = torch.Generator().manual_seed(seed)
    for s in _batches(slots, batch_size):
        z, _ = model.sample(s, scheduler, g)
        out.append(model.images(z).cpu())
    return torch.cat(out), time.perf_counter() - start


@torch.no_grad()
def reconstructions(cfg, model, images: torch.Tensor) -> tuple[dict, dict]:
    """Real images, their VAE round trip, and samples from their slots by DDPM and DDIM; pixel MSEs."""
    x = _float(images, model)
    slots, _ = model.slots(x)
    x, vae = x.cpu(), model.images(model.latents(x)).cpu()
    out, pics = {"recon/mse_vae": float((vae - x).pow(2).mean())}, {"recon_real": x, "recon_vae": vae}
    for kind, steps in (("ddpm", cfg.eval.ddpm_steps), ("ddim", cfg.eval.ddim_steps)):
        sampled, seconds = _sample_images(model, slots, make_scheduler(cfg, kind, steps), cfg.seed, len(slots))
        out[f"recon/mse_{kind}"] = float((sampled - x).pow(2).mean())
        out[f"recon/seconds_{kind}"] = seconds
        pics[f"recon_{kind}"] = sampled
    return out, pics


@torch.no_grad()
def composition(cfg, model, library_images: torch.Tensor, real: torch.Tensor) -> tuple[dict, dict]:
    """Slots of `library_images` clustered by k-means into K groups; new scenes take one slot of each
    group; sampled images and the Fréchet distance of their features to real test images'."""
    k, n, e = cfg.model.num_slots, cfg.eval.n_generate, cfg.eval
    library = collect_slots(model.encoder, _float(library_images) * 2 - 1, e.batch_size)  # (M K, D) on the CPU
    labels, _ = cluster_slots(library, k, seed=cfg.seed)
    sets = compose_slot_sets(library, labels, n, k, torch.Generator().manual_seed(cfg.seed))  # (n, K, D)
    steps = e.ddpm_steps if e.sampler == "ddpm" else e.ddim_steps
    scheduler = make_scheduler(cfg, e.sampler, steps)
    generated, seconds = _sample_images(model, sets, scheduler, cfg.seed + 1, e.batch_size)
    real_u8, real = real[:n], _float(real[:n])
    own = torch.cat([model.slots(_float(r, model))[0] for r in _batches(real_u8, e.batch_size)])
    from_real, _ = _sample_images(model, own, scheduler, cfg.seed + 2, e.batch_size)  # the same decoder, real slots
    space = feature_space()
    out = {"generate/frechet": frechet_to(space, generated, real), "generate/seconds": seconds,
           "generate/features": space.name, "generate/sampler": f"{e.sampler} {steps}"}
    if e.frechet_references:  # each distance costs a matrix square root of the feature width
        out["generate/frechet_real_slots"] = frechet_to(space, from_real, real)
        vae = torch.cat([model.images(model.latents(_float(r, model))).cpu() for r in _batches(real_u8, e.batch_size)])
        out["generate/frechet_vae"] = frechet_to(space, vae, real)
    return out, {"generated": generated, "generated_real_slots": from_real}


@torch.no_grad()
def denoising_strip(cfg, model, images: torch.Tensor) -> dict:
    """Decoded z_t at evenly spaced kept timesteps of ancestral sampling from real images' slots."""
    scheduler = make_scheduler(cfg, "ddpm", cfg.eval.ddpm_steps)
    ts = scheduler.timesteps.tolist()
    keep = [ts[round(i * (len(ts) - 1) / (cfg.eval.strip_steps - 1))] for i in range(cfg.eval.strip_steps)]
    slots, _ = model.slots(_float(images, model))
    z0, kept = model.sample(slots, scheduler, torch.Generator().manual_seed(cfg.seed + 3), keep=tuple(keep))
    frames = [model.images(kept[t]).cpu() for t in keep] + [model.images(z0).cpu()]  # each (n, 3, H, W)
    return {"strip": torch.stack(frames, 1), "strip_t": torch.tensor(keep)}  # (n, S + 1, 3, H, W)


def _hwc(x: torch.Tensor) -> np.ndarray:
    """(..., 3, H, W) in [0, 1] -> (..., H, W, 3) uint8."""
    return (x.clamp(0, 1) * 255).round().byte().movedim(-3, -1).numpy()


def evaluate_model(cfg, model, data: dict, run: Run) -> dict:
    """All post-training scores (summary keys) and the report's pictures (pictures.npz)."""
    e = cfg.eval
    test_images, test_masks = (d[:e.n_images] for d in data["test"])
    summary, ids = segmentation(model, test_images, test_masks, e.batch_size, cfg.model.num_slots, cfg.seed)
    rec, pics = reconstructions(cfg, model, data["test"][0][:e.n_recon])
    comp, gen = composition(cfg, model, data["train"][0][:e.library_images], data["test"][0])
    strip = denoising_strip(cfg, model, data["test"][0][:e.strip_images])
    summary.update(rec, **comp)
    if is_main_process():
        arrays = {k: _hwc(v) for k, v in {**pics, **gen}.items()}
        np.savez_compressed(run.path / PICTURES, **arrays, strip=_hwc(strip["strip"]), strip_t=strip["strip_t"].numpy(),
                            seg_images=test_images[:8].movedim(1, -1).numpy(), seg_true=test_masks[:8].numpy(),
                            seg_pred=ids[:8].numpy().astype(np.uint8))
    return summary
