"""`slot-attention`: object discovery with Slot Attention (Locatello et al. 2020; assignment 2A).

A CNN encoder with a 2D position embedding feeds K slots (learned-Gaussian initialisation,
T iterations of attention with a softmax over slots, GRU and residual MLP); a spatial broadcast
decoder turns each slot into RGB and a mask logit; masks are a softmax over slots and the image
is the sum of masks x contents, trained on the mean squared error. The best checkpoint (by
val/loss) is scored with ARI, FG-ARI and mIoU against the ground-truth instance masks, beside
three learning-free baselines, and used for compositional generation: the slots of training
images are clustered by k-means into K groups, new scenes take one slot of each, and their
Fréchet distance to validation images is reported beside that of reconstructions. The quick
profile departs from the paper in three flags (k-means slot starts, the implicit gradient, each
slot drawn in its own frame: see `quick`); `model.frames=invariant` is Invariant Slot Attention.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from syllabus.config import choice, nested, ranged
from syllabus.data.scenes import SceneDataConfig, check_scene_data, scene_splits
from syllabus.errors import UsageError
from syllabus.experiments import Experiment, register
from syllabus.experiments.slot_attention_eval import ANCHORS, evaluate_model, segment_batches
from syllabus.experiments.slot_attention_report import report_sections, sweep_sections
from syllabus.metrics.ari import segment_scores
from syllabus.nn.slot_attention import FRAMES, INITS, BroadcastDecoder, SlotAttentionAutoEncoder, SlotEncoder
from syllabus.runs import Run
from syllabus.train import StepContext, TrainConfig, Trainer, fit, fit_summary, load_best


@dataclass
class ModelConfig:
    num_slots: int = ranged(7, 1)
    slot_dim: int = ranged(64, 1)
    iters: int = ranged(3, 1)
    hidden_dim: int = ranged(128, 1)  # width of the slot MLP
    encoder_channels: int = ranged(64, 1)
    encoder_strides: tuple[int, ...] = (1, 1, 1, 1)  # the paper's; (2, 2, 1, 1) is 16x cheaper
    kernel_size: int = ranged(5, 1)
    decoder_channels: int = ranged(64, 1)
    decoder_init: int = ranged(8, 1)  # side of the grid each slot is broadcast onto
    decoder_res: int = ranged(0, 0)  # side where the decoder's convolutions stop; 0: the image size
    decoder_depth: int = ranged(2, 2)  # 3 x 3 convolutions at decoder_res, the output one included
    implicit_grad: bool = False  # back-propagate through the last iteration only (Chang et al. 2022)
    slot_init: str = choice("gaussian", INITS)  # learned: BO-QSA's K learned slots; kmeans: centres of the inputs
    frames: str = choice("none", FRAMES)  # attention: the decoder draws each slot in its frame; invariant: ISA


@dataclass
class EvalConfig:
    n_images: int = ranged(0, 0)  # val (and test) images scored each epoch and at the end; 0: all
    n_baseline: int = ranged(200, 1)  # val images on which the k-means baselines and ours are compared
    library_images: int = ranged(1000, 1)  # training images whose slots form the library
    n_generate: int = ranged(500, 2)  # composed scenes, compared with as many val images
    n_show: int = ranged(6, 1)  # images in the report's figures
    inception: bool = True  # clean-fid's Inception when its weights are on disk, else the offline space
    batch_size: int = ranged(64, 1)


def _train(**kw) -> TrainConfig:
    defaults = dict(optimizer="adam", lr=4e-4, weight_decay=0.0, schedule="constant", monitor="val/loss",
                    monitor_mode="min", grad_clip=1.0, precision="auto")
    return TrainConfig(**{**defaults, **kw})


@dataclass
class Config:
    data: SceneDataConfig = nested(SceneDataConfig)
    model: ModelConfig = nested(ModelConfig)
    train: TrainConfig = field(default_factory=_train)
    eval: EvalConfig = nested(EvalConfig)
    seed: int = 0


def smoke() -> Config:
    model = ModelConfig(num_slots=4, slot_dim=16, hidden_dim=16, encoder_channels=8, encoder_strides=(2, 1),
                        kernel_size=3, decoder_channels=8, decoder_init=8, decoder_res=16)
    return Config(data=SceneDataConfig(image_size=32, n_train=24, n_val=8, n_test=8, max_objects=3), model=model,
                  train=_train(epochs=2, batch_size=8, lr=1e-3, log_every=1),
                  eval=EvalConfig(n_baseline=4, library_images=8, n_generate=6, n_show=2, inception=False,
                                  batch_size=8))


def quick() -> Config:
    """64 px scenes, a CPU-sized model, 1,500 steps in bfloat16: about 1.5 minutes on one thread.

    N = 16 x 16 inputs (two stride-2 convolutions), D = 32, and a small decoder: each slot is
    broadcast at 16 x 16 and decoded by two 3 x 3 convolutions (masks and image then upsampled
    bilinearly to 64 px). Three departures from the paper make a CPU budget enough (measured in
    the README): slots start on k-means centres of the image's inputs, the gradient goes through
    the last iteration only, and the decoder draws each slot in its own frame (the centre and
    spread of its attention). With the paper's model the masks stay uniform over slots for the
    first ~1,200 steps.
    """
    model = ModelConfig(slot_dim=32, hidden_dim=64, encoder_channels=32, encoder_strides=(2, 2, 1),
                        decoder_channels=32, decoder_init=16, decoder_res=16, implicit_grad=True, slot_init="kmeans",
                        frames="attention")
    return Config(data=SceneDataConfig(image_size=64, n_train=2000, n_val=300, n_test=300), model=model,
                  train=_train(epochs=12, steps_per_epoch=125, batch_size=16, lr=1e-3, warmup_steps=100,
                               schedule="cosine", log_every=25),
                  eval=EvalConfig(n_baseline=100, library_images=300, n_generate=300))


def full() -> Config:
    """CLEVRTex at 128 px, K = 11, the paper's model and optimisation (Adam 4e-4, warm-up, decay)."""
    return Config(data=SceneDataConfig(name="clevrtex", image_size=128, num_workers=8),
                  model=ModelConfig(num_slots=11),
                  train=_train(epochs=200, batch_size=64, warmup_steps=10_000, schedule="exponential",
                               gamma=0.9957, log_every=100),  # 0.5 per ~100k steps at 625 steps per epoch
                  eval=EvalConfig(n_baseline=500, library_images=5000, n_generate=5000))


def build_model(cfg: Config, summary: dict | None = None) -> SlotAttentionAutoEncoder:
    m, size = cfg.model, cfg.data.image_size
    encoder = SlotEncoder(m.num_slots, m.slot_dim, m.iters, m.encoder_channels, (size, size),
                          tuple(m.encoder_strides), m.kernel_size, m.hidden_dim, m.implicit_grad, m.slot_init,
                          m.frames)
    decoder = BroadcastDecoder(m.slot_dim, (size, size), m.decoder_init, m.decoder_channels, m.decoder_res or None,
                               m.decoder_depth, m.frames != "none")
    return SlotAttentionAutoEncoder(encoder, decoder)


class SlotTrainer(Trainer):
    """Reconstruction MSE on images scaled to [-1, 1]; val loss, ARI, FG-ARI and mIoU each epoch."""

    def __init__(self, model: SlotAttentionAutoEncoder, val_loader: DataLoader):
        self.model, self.val_loader = model, val_loader

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def train_step(self, batch, ctx: StepContext) -> dict[str, float]:
        x = ctx.to_device(batch[0]) * 2 - 1  # (B, 3, H, W) in [-1, 1]
        loss = F.mse_loss(self.model(x)["recon"], x)
        ctx.update("main", loss)
        return {"loss": loss.item()}

    def evaluate(self, ctx: StepContext) -> dict[str, float]:
        out = segment_batches(self.model, self.val_loader)
        posterior = segment_scores(out["true"], out["posterior"])["fg_ari"]
        return {"loss": out["loss"], **segment_scores(out["true"], out["pred"]), "posterior/fg_ari": posterior}


def _first(ds, n: int):
    return Subset(ds, range(min(n, len(ds)))) if n else ds


def run(cfg: Config, run: Run) -> dict:
    torch.manual_seed(cfg.seed)
    splits, info = scene_splits(cfg.data)
    workers = cfg.data.num_workers
    train_loader = DataLoader(splits["train"], batch_size=cfg.train.batch_size, shuffle=True, drop_last=True,
                              num_workers=workers)
    eval_loaders = {s: DataLoader(_first(splits[s], cfg.eval.n_images), batch_size=cfg.eval.batch_size,
                                  num_workers=workers) for s in ("val", "test")}
    model = build_model(cfg)
    trainer = SlotTrainer(model, eval_loaders["val"])
    result = fit(trainer, train_loader, cfg.train, run, seed=cfg.seed)
    load_best(run, {"model": model})
    summary = evaluate_model(model.eval(), splits, eval_loaders, cfg, run)
    summary.update(fit_summary(result, run, trainer), split_info=info, anchors=ANCHORS,
                   num_slots=cfg.model.num_slots, feature_hw=list(model.encoder.feature_hw))
    run.save_summary(summary)
    return summary


def check(cfg: Config) -> None:
    """Scene data present, and the model's sizes buildable: each a one-line UsageError."""
    check_scene_data(cfg.data)
    m, side = cfg.model, cfg.data.image_size
    if not m.encoder_strides or min(m.encoder_strides) < 1 or m.kernel_size % 2 == 0:
        raise UsageError(f"model.encoder_strides={list(m.encoder_strides)} needs one or more positive integers and "
                         f"model.kernel_size={m.kernel_size} an odd one")
    try:
        BroadcastDecoder(m.slot_dim, (side, side), m.decoder_init, 1, m.decoder_res or None, m.decoder_depth)
    except ValueError as e:
        raise UsageError(f"data.image_size={side}, model.decoder_init={m.decoder_init}, "
                         f"model.decoder_res={m.decoder_res}: {e}") from None


register(Experiment(
    name="slot-attention",
    title="Slot Attention object discovery: ARI / FG-ARI vs baselines, compositional generation",
    profiles={"smoke": smoke, "quick": quick, "full": full},
    run=run,
    sections=report_sections,
    sweep_sections=sweep_sections,
    build_model=build_model,
    check=check,
    headline=["val/fg_ari", "val/posterior/fg_ari", "val/ari", "val/miou", "best_baseline/fg_ari", "fd_generated",
              "fd_reconstruction"],
    key_figure="reconstructions",
    default_sweep={},
    monitors=("val/loss", "val/ari", "val/fg_ari", "val/posterior/fg_ari", "val/miou"),
    budget_s=85,  # the quick in bfloat16, measured beside another run (one thread each): 82 s
))
