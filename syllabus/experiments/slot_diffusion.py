"""`slot-diffusion`: slot attention with a latent diffusion decoder (SlotDiffusion, assignment 2B).

Two stages through the one loop core. (1) A latent VAE (`syllabus.nn.latent_vae`): loaded from
`model.vae` when given (the assignment's checkpoint), else trained here on the same scenes
(a sub-run in `vae/`), then frozen; the training images are encoded once. (2) The slot encoder
and a slot-conditioned UNet, trained jointly on the DDPM denoising loss in the VAE's latent
space (the encoder starts from a slot-attention run's, `model.slot_encoder`, declared reuse;
`none`: from scratch): z = vae.encode(x) * s (s = 1 / std of the latents),
x_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps, loss |eps - eps_theta(x_t, t, slots)|^2. The best
checkpoint (by `val/loss`, EMA weights when `train.ema` > 0) is then scored: ARI / FG-ARI of
the last slot-attention iteration's attention, reconstructions sampled from a real image's
slots (ancestral DDPM and DDIM), compositional generation from a k-means slot library with its
Fréchet distance, and the denoising strip. `--set model.beta_schedule=scaled_linear` switches
the noise schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from syllabus.config import choice, nested, ranged
from syllabus.data.scenes import SceneDataConfig, check_scene_data, scene_splits
from syllabus.errors import UsageError
from syllabus.experiments import Experiment, finished_run, load_trained, register
from syllabus.experiments.slot_diffusion_eval import attention_segments, evaluate_model, make_scheduler
from syllabus.experiments.slot_diffusion_report import report_sections, sweep_sections
from syllabus.metrics.ari import segment_scores
from syllabus.nn.diffusion import BETA_SCHEDULES, SCHEDULERS, Scheduler, sample_loop
from syllabus.nn.latent_vae import VAE, load_vae_checkpoint, vae_loss
from syllabus.nn.slot_attention import INITS, SlotEncoder
from syllabus.nn.unet import UNet
from syllabus.runs import Run, read_json
from syllabus.train import StepContext, TrainConfig, Trainer, fit, fit_summary, load_best, seed_everything


@dataclass
class ModelConfig:
    num_slots: int = ranged(7, 1)
    slot_dim: int = ranged(64, 1)
    slot_iters: int = ranged(3, 1)
    encoder_channels: int = ranged(64, 1)
    encoder_strides: tuple[int, ...] = (2, 2, 1, 1)  # (1, 1, 1, 1) is the paper's N = H W
    slot_init: str = choice("gaussian", INITS)  # where the slots start (see syllabus.nn.slot_attention)
    slot_encoder: str = ""  # a slot-attention run whose trained encoder ours starts from; "none": from scratch
    unet_channels: tuple[int, ...] = (64, 128)
    unet_blocks: int = ranged(1, 1)
    heads: int = ranged(4, 1)
    beta_schedule: str = choice("linear", list(BETA_SCHEDULES))
    beta_start: float = ranged(0.0015, 0, 1, lo_open=True)
    beta_end: float = ranged(0.0195, 0, 1, lo_open=True)
    timesteps: int = ranged(1000, 2)
    noise_skip: bool = False  # predicted noise = UNet + sqrt(1 - alpha-bar_t) z_t (see SlotDiffusion)
    vae: str = ""  # checkpoint of a given VAE (weights only); empty: train one here first
    vae_channels: tuple[int, ...] = (32, 64, 64)  # widths per level; 2 halvings: 128 px -> 32 x 32
    kl_weight: float = ranged(1e-4, 0)  # of the VAE stage
    vae_crop: int = ranged(0, 0)  # VAE stage trains on random crops of this side (0: whole images)


@dataclass
class EvalConfig:
    n_images: int = ranged(64, 2)  # test images scored for ARI (and the baselines)
    ddpm_steps: int = ranged(1000, 1)  # ancestral sampling steps (strided below T)
    ddim_steps: int = ranged(50, 1)
    n_recon: int = ranged(8, 1)  # test images reconstructed from their slots
    n_generate: int = ranged(64, 2)  # compositional samples, and real images they are compared with
    library_images: int = ranged(200, 1)  # training images whose slots form the library
    sampler: str = choice("ddpm", list(SCHEDULERS))  # for compositional generation
    frechet_references: bool = True  # also the distance of real slots' samples and of the VAE round trip
    strip_images: int = ranged(3, 1)
    strip_steps: int = ranged(6, 2)
    batch_size: int = ranged(64, 1)


def _diffusion_train(**kw) -> TrainConfig:
    return TrainConfig(**{"optimizer": "adam", "lr": 3e-4, "weight_decay": 0.0, "schedule": "constant",
                          "monitor": "val/loss", "monitor_mode": "min", "grad_clip": 1.0, **kw})


def _vae_train(**kw) -> TrainConfig:
    return TrainConfig(**{"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "schedule": "cosine",
                          "monitor": "val/mse", "monitor_mode": "min", **kw})


@dataclass
class Config:
    data: SceneDataConfig = nested(SceneDataConfig)
    model: ModelConfig = nested(ModelConfig)
    train: TrainConfig = field(default_factory=_diffusion_train)
    vae_train: TrainConfig = field(default_factory=_vae_train)
    eval: EvalConfig = nested(EvalConfig)
    seed: int = 0


def smoke() -> Config:
    small = ModelConfig(num_slots=4, slot_dim=16, encoder_channels=8, encoder_strides=(2, 2), unet_channels=(8, 16),
                        heads=2, vae_channels=(8, 8, 8), vae_crop=16, slot_encoder="none")
    return Config(data=SceneDataConfig(image_size=32, n_train=24, n_val=8, n_test=8, max_objects=3), model=small,
                  train=_diffusion_train(epochs=2, batch_size=8, log_every=1),
                  vae_train=_vae_train(epochs=2, batch_size=8, log_every=1),
                  eval=EvalConfig(n_images=4, ddpm_steps=5, ddim_steps=3, n_recon=2, n_generate=4, library_images=8,
                                  strip_images=2, strip_steps=3, batch_size=8, frechet_references=False))


def demo() -> Config:
    """64 px scenes, 16 x 16 latents, a small UNet, 80 VAE steps and 150 denoising steps: about a
    minute, the share of `run all` (it shows the pipeline, it does not train a model).

    The slot encoder starts from a slot-attention run's (`model.slot_encoder`: the runner hands
    over the one `run all` made, or trains that experiment's quick first); the encoder settings
    here mirror that run's, and apply when `model.slot_encoder=none` trains one from scratch.
    """
    model = ModelConfig(slot_dim=32, encoder_channels=32, encoder_strides=(2, 2, 1), slot_init="kmeans",
                        unet_channels=(32, 64), vae_channels=(16, 32, 32), vae_crop=32, noise_skip=True)
    return Config(data=SceneDataConfig(image_size=64, n_train=2000, n_val=64, n_test=200), model=model,
                  train=_diffusion_train(epochs=3, batch_size=16, lr=5e-4, steps_per_epoch=50, log_every=10),
                  vae_train=_vae_train(epochs=2, batch_size=16, lr=2e-3, steps_per_epoch=40, log_every=10),
                  eval=EvalConfig(n_images=64, ddpm_steps=50, ddim_steps=25, n_generate=64, library_images=200,
                                  sampler="ddim"))


def quick() -> Config:
    """The demo's model trained longer: 400 VAE steps, then 2,000 denoising steps with an EMA of the
    weights (about 8 minutes on one thread). `model.noise_skip` departs from the assignment's plain
    noise prediction: without it this budget samples saturated noise (measured in the README)."""
    cfg = demo()
    cfg.vae_train.epochs, cfg.train.epochs, cfg.train.ema = 10, 40, 0.999
    return cfg


def full() -> Config:
    """CLEVRTex 128 px with the assignment's VAE checkpoint (`--set model.vae=PATH`), 11 slots."""
    model = ModelConfig(num_slots=11, encoder_strides=(1, 1, 1, 1), unet_channels=(128, 256, 256), unet_blocks=2,
                        heads=8, slot_encoder="none")  # the assignment: encoder and UNet trained jointly
    return Config(data=SceneDataConfig(name="clevrtex", image_size=128, num_workers=8), model=model,
                  train=_diffusion_train(epochs=100, batch_size=32, lr=1e-4, warmup_steps=2500, ema=0.999,
                                         log_every=100),
                  vae_train=_vae_train(epochs=20, batch_size=32, log_every=100),
                  eval=EvalConfig(n_images=500, n_generate=1000, library_images=2000))


# --------------------------------------------------------------------------- the model

UPSTREAM = "slot-attention"  # whose trained slot encoder `model.slot_encoder` starts from


class SlotDiffusion(nn.Module):
    """Slot encoder + UNet over the latents of a frozen VAE; `latent_scale` s maps vae latents to unit scale.

    Args:
        encoder: images (B, 3, H, W) in [-1, 1] -> slots (B, K, D), attention (B, K, N).
        unet: (z_t (B, c, h, w), t (B,), slots) -> predicted noise.
        vae: the frozen first stage.
        image_size: side of the images (the latents are image_size / vae.factor).
    """

    def __init__(self, encoder: SlotEncoder, unet: UNet, vae: VAE, image_size: int,
                 noise_skip: torch.Tensor | None = None):
        super().__init__()
        self.encoder, self.unet, self.vae = encoder, unet, vae.requires_grad_(False)
        self.latent_hw = (image_size // vae.factor, image_size // vae.factor)
        self.register_buffer("latent_scale", torch.ones(()))
        self.register_buffer("noise_skip", noise_skip, persistent=False)  # (T,) or None

    def predict_noise(self, z_t: torch.Tensor, t: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """The UNet's noise prediction for z_t (B, c, h, w) at steps t (B,) given slots (B, K, D).

        With `noise_skip` (sqrt(1 - alpha-bar_t) per t) the UNet learns what the best linear guess
        sqrt(1 - alpha-bar_t) z_t misses (for unit-variance latents). Near t = T that guess is almost
        exact, and an error there is divided by sqrt(alpha-bar_T) (1 / 0.005) in the clean latent the
        sampler aims at; a zero-initialised UNet starts at the guess (the c_skip of Karras et al. 2022).
        """
        eps = self.unet(z_t, t, slots)
        if self.noise_skip is not None:
            eps = eps + self.noise_skip[t].view(-1, 1, 1, 1) * z_t
        return eps

    def slots(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 3, H, W) in [0, 1] -> slots (B, K, D), last attention (B, K, N)."""
        return self.encoder(images * 2 - 1)

    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> scaled latents (B, c, h, w)."""
        return self.vae.encode(images * 2 - 1) * self.latent_scale

    def images(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in [0, 1] (clamped)."""
        return ((self.vae.decode(z / self.latent_scale) + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def sample(self, slots: torch.Tensor, scheduler: Scheduler, generator: torch.Generator,
               keep: tuple[int, ...] = ()) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Latents sampled given slots (B, K, D) from x_T ~ N(0, I): (z_0, {t: z_t})."""
        x_T = torch.randn(len(slots), self.unet.conv_in.in_channels, *self.latent_hw, generator=generator)
        x_T = x_T.to(slots.device)
        return sample_loop(lambda x, t: self.predict_noise(x, t, slots), scheduler, x_T, generator=generator,
                           keep=keep)


def build_vae(cfg: Config) -> VAE:
    return VAE(latent_channels=3, channels=cfg.model.vae_channels)


def upstream_run(cfg: Config) -> Path | None:
    """The slot-attention run whose encoder ours starts from, or None (trained from scratch)."""
    return None if cfg.model.slot_encoder in ("", "none") else Path(cfg.model.slot_encoder).expanduser()


def build_encoder(cfg: Config) -> SlotEncoder:
    """The upstream run's trained encoder (its own architecture and weights), else a new one."""
    path, m = upstream_run(cfg), cfg.model
    if path is not None:
        return load_trained(path)[0].encoder.train()
    return SlotEncoder(m.num_slots, m.slot_dim, m.slot_iters, m.encoder_channels,
                       (cfg.data.image_size, cfg.data.image_size), tuple(m.encoder_strides), init=m.slot_init)


def build_model(cfg: Config, summary: dict | None = None) -> SlotDiffusion:
    m = cfg.model
    encoder = build_encoder(cfg)
    unet = UNet(3, m.unet_channels, encoder.slot_width, m.unet_blocks, m.heads)
    skip = (1 - make_scheduler(cfg).alphas_cumprod).sqrt().float() if m.noise_skip else None  # (T,)
    return SlotDiffusion(encoder, unet, build_vae(cfg), cfg.data.image_size, skip)


def check_upstream(cfg: Config) -> None:
    """`model.slot_encoder`: a finished slot-attention run on images of this size with as many slots."""
    path = upstream_run(cfg)
    if path is None:
        return
    up = finished_run(path, "model.slot_encoder", UPSTREAM, "; 'none' trains the encoder from scratch")
    ours, theirs = (cfg.data.image_size, cfg.model.num_slots), (up.data.image_size, up.model.num_slots)
    if ours != theirs:
        raise UsageError(f"model.slot_encoder: {path} has data.image_size, model.num_slots = {theirs}; this run "
                         f"{ours}: set them to match, or model.slot_encoder=none")


def upstream_scores(cfg: Config) -> dict:
    """The upstream slot-attention run's own numbers (its decoder's masks), for the report."""
    path = upstream_run(cfg)
    if path is None:
        return {}
    s = read_json(path / "summary.json")
    keys = ("test/ari", "test/fg_ari", "test/miou", "test/posterior/fg_ari", "fd_generated", "fd_reconstruction",
            "feature_space", "n_generate")
    return {"slot_attention": {"run": str(path), **{k: s[k] for k in keys if k in s}}}


def check(cfg: Config) -> None:
    check_scene_data(cfg.data)
    check_upstream(cfg)
    m, side = cfg.model, cfg.data.image_size
    if m.vae:
        load_vae_checkpoint(build_vae(cfg), m.vae)
    factor = 2 ** (len(m.vae_channels) - 1)
    if side % (factor * 2 ** (len(m.unet_channels) - 1)):
        raise UsageError(f"data.image_size={side} must divide by {factor} (VAE) x {2 ** (len(m.unet_channels) - 1)} "
                         f"(UNet levels): change model.vae_channels or model.unet_channels")
    if m.vae_crop and (m.vae_crop > side or m.vae_crop % factor):
        raise UsageError(f"model.vae_crop={m.vae_crop} must be at most data.image_size={side} and divide by {factor}")
    if m.beta_start >= m.beta_end:
        raise UsageError(f"model.beta_start={m.beta_start} must be below model.beta_end={m.beta_end}")
    if not m.unet_channels or min(m.unet_channels) < 1 or not m.encoder_strides or min(m.encoder_strides) < 1:
        raise UsageError("model.unet_channels and model.encoder_strides need one or more positive integers")
    for c in m.unet_channels:
        if c % m.heads:
            raise UsageError(f"model.unet_channels={list(m.unet_channels)}: each must divide by model.heads={m.heads}")
    if cfg.eval.ddpm_steps > m.timesteps or cfg.eval.ddim_steps > m.timesteps:
        raise UsageError(f"eval.ddpm_steps and eval.ddim_steps must be at most model.timesteps={m.timesteps}")


# --------------------------------------------------------------------------- data


def stack_split(ds: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """A scenes or CLEVRTex split as tensors: images (N, 3, H, W) uint8, instance ids (N, H, W) uint8."""
    if hasattr(ds, "images") and hasattr(ds, "masks"):  # the embedded scenes hold the arrays already
        images, masks = ds.images.permute(0, 3, 1, 2), ds.masks
    else:
        pairs = [ds[i] for i in range(len(ds))]
        images = torch.stack([(p[0] * 255).round().to(torch.uint8) for p in pairs])
        masks = torch.stack([p[1].to(torch.uint8) for p in pairs])
    return images.contiguous(), masks.contiguous()


def as_float(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255


def eval_device(run: Run) -> torch.device:
    """Where encoding and evaluation run: the GPU when there is one and the run may use it."""
    return torch.device("cuda" if run.device != "cpu" and torch.cuda.is_available() else "cpu")


@torch.no_grad()
def encode_latents(vae: VAE, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Posterior means of uint8 images (N, 3, H, W): (N, c, h, w), unscaled, on the CPU."""
    device = next(vae.parameters()).device
    vae.eval()
    return torch.cat([vae.encode(as_float(images[i:i + batch_size]).to(device) * 2 - 1).cpu()
                      for i in range(0, len(images), batch_size)])


# --------------------------------------------------------------------------- stage 1: the VAE


class VAETrainer(Trainer):
    """The KL-regularised autoencoder loss on (random crops of) the scenes; val/mse on whole images."""

    def __init__(self, vae: VAE, val_images: torch.Tensor, kl_weight: float, crop: int):
        self.vae, self.val_images, self.kl_weight, self.crop = vae, val_images, kl_weight, crop

    def modules(self) -> dict[str, nn.Module]:
        return {"vae": self.vae}

    def train_step(self, batch, ctx: StepContext) -> dict[str, float]:
        x = as_float(ctx.to_device(batch[0])) * 2 - 1  # (B, 3, S, S) in [-1, 1]
        side = x.shape[-1]
        if self.crop and self.crop < side:  # the VAE is convolutional: crops teach it as whole images do
            i, j = torch.randint(0, side - self.crop + 1, (2,)).tolist()
            x = x[..., i:i + self.crop, j:j + self.crop]
        loss, parts = vae_loss(self.vae, x, self.kl_weight)
        ctx.update("main", loss)
        return parts

    def evaluate(self, ctx: StepContext) -> dict[str, float]:
        x = as_float(self.val_images.to(ctx.device)) * 2 - 1
        recon = self.vae.decode(self.vae.encode(x))
        return {"mse": float(F.mse_loss(recon, x))}


def prepare_vae(cfg: Config, run: Run, train_images: torch.Tensor, val_images: torch.Tensor) -> tuple[VAE, dict]:
    """The frozen first stage: the given checkpoint, or one trained here in the sub-run `vae/`."""
    vae = build_vae(cfg)
    if cfg.model.vae:
        load_vae_checkpoint(vae, cfg.model.vae)
        return vae.requires_grad_(False).eval(), {"vae": "given", "vae_checkpoint": cfg.model.vae}
    sub = Run(run.path / "vae", device=run.device, resuming=run.resuming)
    trainer = VAETrainer(vae, val_images, cfg.model.kl_weight, cfg.model.vae_crop)
    loader = DataLoader(TensorDataset(train_images), batch_size=cfg.vae_train.batch_size, shuffle=True)
    result = fit(trainer, loader, cfg.vae_train, sub, seed=cfg.seed)
    load_best(sub, {"vae": vae})
    vae = vae.cpu()
    return vae.requires_grad_(False).eval(), {"vae": "trained here", "vae/val_mse": result.best_value,
                                              "vae/epochs": result.epochs_run,
                                              "vae/time": sum(r["time/epoch"] for r in sub.read_metrics()
                                                              if "time/epoch" in r)}


# --------------------------------------------------------------------------- stage 2: slots + UNet


class DiffusionTrainer(Trainer):
    """The denoising loss of the slot encoder and UNet; validation: the same loss at fixed t and noise,
    and ARI / FG-ARI of the attention."""

    def __init__(self, model: SlotDiffusion, scheduler: Scheduler, val: tuple[torch.Tensor, ...]):
        self.model, self.scheduler = model, scheduler
        images, latents, masks = val
        g = torch.Generator().manual_seed(0)
        t = torch.randint(0, scheduler.num_train_timesteps, (len(images),), generator=g)
        self.val = (images, latents, masks, t, torch.randn(latents.shape, generator=g))

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def denoising_loss(self, images: torch.Tensor, z: torch.Tensor, t: torch.Tensor, noise: torch.Tensor):
        slots, attn = self.model.slots(as_float(images))
        z_t = self.scheduler.add_noise(z * self.model.latent_scale, noise, t)
        return F.mse_loss(self.model.predict_noise(z_t, t, slots), noise), attn

    def train_step(self, batch, ctx: StepContext) -> dict[str, float]:
        images, z = ctx.to_device(batch)
        t = torch.randint(0, self.scheduler.num_train_timesteps, (len(z),), device=z.device)
        loss, _ = self.denoising_loss(images, z, t, torch.randn_like(z))
        ctx.update("main", loss)
        return {"loss": loss.item()}

    def evaluate(self, ctx: StepContext) -> dict[str, float]:
        images, z, masks, t, noise = ctx.to_device(self.val)
        loss, attn = self.denoising_loss(images, z, t, noise)
        ids = attention_segments(attn, self.model.encoder.feature_hw, tuple(masks.shape[-2:]))
        scores = segment_scores(masks.long().cpu(), ids.cpu())
        return {"loss": float(loss), "ari": scores["ari"], "fg_ari": scores["fg_ari"]}


def run(cfg: Config, run: Run) -> dict:
    seed_everything(cfg.seed)
    splits, info = scene_splits(cfg.data)
    data = {s: stack_split(splits[s]) for s in ("train", "val", "test")}
    vae, vae_info = prepare_vae(cfg, run, data["train"][0], data["val"][0])
    bs = cfg.eval.batch_size
    latents = {s: encode_latents(vae.to(eval_device(run)), data[s][0], bs) for s in ("train", "val")}  # (N, 3, h, w)
    seed_everything(cfg.seed)
    model = build_model(cfg)
    model.vae.load_state_dict(vae.cpu().state_dict())
    model.latent_scale.fill_(1.0 / float(latents["train"].std()))
    scheduler = make_scheduler(cfg)
    trainer = DiffusionTrainer(model, scheduler, (data["val"][0], latents["val"], data["val"][1]))
    loader = DataLoader(TensorDataset(data["train"][0], latents["train"]), batch_size=cfg.train.batch_size,
                        shuffle=True, num_workers=cfg.data.num_workers)
    result = fit(trainer, loader, cfg.train, run, seed=cfg.seed)
    model = model.cpu()
    load_best(run, {"model": model})
    model.to(eval_device(run)).eval()
    seed_everything(cfg.seed)
    summary = evaluate_model(cfg, model, data, run)
    summary.update(fit_summary(result, run, trainer), **vae_info, data_info=info,
                   latent_scale=float(model.latent_scale), latent_shape=list(latents["train"].shape[1:]),
                   beta_schedule=cfg.model.beta_schedule, num_slots=cfg.model.num_slots, **upstream_scores(cfg),
                   trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad))
    run.save_summary(summary)
    return summary


register(Experiment(
    name="slot-diffusion",
    title="Slot attention with a latent diffusion decoder: VAE, slot-conditioned UNet, DDPM/DDIM, ARI, FID",
    profiles={"smoke": smoke, "demo": demo, "quick": quick, "full": full},
    run=run,
    sections=report_sections,
    sweep_sections=sweep_sections,
    build_model=build_model,
    check=check,
    headline=["test/fg_ari", "test/ari", "recon/mse_ddpm", "generate/frechet", "val/loss", "time_per_epoch"],
    key_figure="samples",
    default_sweep={},
    reuses={"model.slot_encoder": UPSTREAM},  # the runner hands over a slot-attention run (trains one if none)
    monitors=("val/loss", "val/fg_ari", "val/ari"),
    budget_s=75,  # demo, measured with one thread beside another job: 68 s (144 s in a loaded `run all`)
))
