"""`gan`: training dynamics of a vanilla GAN on handwritten digits (ATML task 3).

A generator and a discriminator (`model.arch=mlp|conv`) are trained on scikit-learn's
digits (the embedded default) or MNIST (`full`) by the loop core with `GanTrainer`
(`syllabus/gan_step.py`). Every step logs both losses, the mean D(x) and D(G(z)) and both
gradient norms; every period of `train.steps_per_epoch` steps (an epoch of the core)
measures the samples of a fixed noise batch with a digit classifier trained on the real
training digits (`syllabus/metrics/gan_samples.py`): classes covered, KL(class histogram ||
uniform), the Fréchet distance in the classifier's features, and D(x) on D's training vs
held-out images.

`gan.scenario` provokes one failure (`baseline`, `vanishing`, `collapse`, `overfit`); the
mitigations switch on one by one (`gan.non_saturating`, `gan.label_smoothing`,
`gan.instance_noise`, `gan.spectral_norm`, `gan.diffaug`, `gan.minibatch_std`), or by name
through `gan.mitigation` (the sweep axis; `remedy` is each scenario's usual remedy):

    syllabus run gan --sweep gan.scenario=baseline,vanishing,collapse,overfit --sweep \\
        gan.mitigation=none,non_saturating,label_smoothing,instance_noise,spectral_norm,diffaug,minibatch_std
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from syllabus.classify import ClassifierTrainer, predict
from syllabus.config import choice, nested, ranged
from syllabus.data.digits import digits_splits, mnist_splits, require_digits_data
from syllabus.errors import UsageError
from syllabus.experiments import Experiment, register
from syllabus.experiments.gan_report import report_sections, sweep_sections
from syllabus.experiments.gan_settings import SCENARIOS, GanConfig, Settings, mitigations_on, resolve
from syllabus.gan_step import GanTrainConfig, GanTrainer, real_loader
from syllabus.metrics.gan_samples import SampleEvaluator
from syllabus.nn.gan import DISCRIMINATORS, GENERATORS
from syllabus.nn.resnet import ResNet
from syllabus.runs import Run
from syllabus.train import StepContext, TrainConfig, fit, fit_summary, load_best, seed_everything

NUM_CLASSES = 10
EVAL_KEYS = ("classes_covered", "kl_uniform", "frechet", "d_train_real", "d_heldout_real", "d_gap")
STEP_KEYS = ("d_loss", "g_loss", "d_real", "d_fake", "d_grad_norm", "g_grad_norm")


@dataclass
class DataConfig:
    name: str = choice("digits", ["digits", "mnist"])
    root: str = ""  # MNIST folder (torchvision layout); default <data dir>/mnist
    image_size: int = ranged(8, 4)  # digits are 8x8 (resized if larger); MNIST is 28x28
    train_fraction: float = ranged(1.0, 0, 1, lo_open=True)  # share of the training images the GAN sees
    seed: int = 0  # split seed, and which images the fraction keeps


@dataclass
class ModelConfig:
    arch: str = choice("mlp", ["mlp", "conv"])
    z_dim: int = ranged(32, 1)
    g_width: int = ranged(128, 1)  # MLP hidden units / conv channels of G's last hidden layer
    d_width: int = ranged(128, 1)  # MLP hidden units / conv channels of D's first layer


@dataclass
class EvalConfig:
    n_samples: int = ranged(1000, 2)  # generated images measured per period (fixed noise)
    min_share: float = ranged(0.02, 0, 1)  # a class is covered when it gets at least this share of the samples
    n_grid: int = ranged(20, 1)  # fixed-noise samples kept per period for the sample grids


def _classifier_train() -> TrainConfig:
    return TrainConfig(epochs=8, batch_size=64, optimizer="adam", lr=2e-3, weight_decay=0.0, log_every=0)


@dataclass
class Config:
    data: DataConfig = nested(DataConfig)
    model: ModelConfig = nested(ModelConfig)
    train: GanTrainConfig = nested(GanTrainConfig)
    gan: GanConfig = nested(GanConfig)
    eval: EvalConfig = nested(EvalConfig)
    classifier: TrainConfig = nested(_classifier_train)  # the digit classifier that measures samples
    seed: int = 0
    cpu_threads: int = ranged(1, 0)  # torch CPU threads during the run (tiny networks run fastest on one); 0 = as is


def smoke() -> Config:
    return Config(
        model=ModelConfig(z_dim=8, g_width=32, d_width=32),
        train=GanTrainConfig(epochs=2, steps_per_epoch=15, batch_size=32, lr_g=1e-3, lr_d=1e-3),
        eval=EvalConfig(n_samples=200, n_grid=8),
        classifier=dataclasses.replace(_classifier_train(), epochs=2, max_steps=3),
    )


def quick() -> Config:
    """1,200 steps in periods of 200 on the 8x8 digits, MLP pair, Adam 1e-3."""
    return Config(train=GanTrainConfig(epochs=6, steps_per_epoch=200, batch_size=64, lr_g=1e-3, lr_d=1e-3))


def full() -> Config:
    """MNIST at 28x28 with the DCGAN-style pair (Adam 2e-4, beta1 0.5, batch 128), 20,000 steps."""
    return Config(
        data=DataConfig(name="mnist", image_size=28),
        model=ModelConfig(arch="conv", z_dim=64, g_width=64, d_width=64),
        train=GanTrainConfig(epochs=20, steps_per_epoch=1000, batch_size=128, lr_g=2e-4, lr_d=2e-4, log_every=10),
        eval=EvalConfig(n_samples=5000),
        classifier=dataclasses.replace(_classifier_train(), epochs=3, batch_size=128),
    )


def check(cfg: Config) -> None:
    """Fail before training: missing MNIST, or settings the networks cannot take."""
    require_digits_data(cfg.data.name, cfg.data.root or None)
    if cfg.model.arch == "conv" and cfg.data.image_size % 4:
        raise UsageError(f"data.image_size={cfg.data.image_size}: model.arch=conv needs a multiple of 4")
    if cfg.train.lr != GanTrainConfig.lr:
        raise UsageError("train.lr is not a GAN setting: D and G have their own, train.lr_d and train.lr_g")


# --------------------------------------------------------------------------- data


def load_images(cfg: DataConfig) -> dict[str, TensorDataset]:
    """train/val/test (image (1, S, S) in [-1, 1], label) datasets."""
    if cfg.name == "mnist":
        splits = mnist_splits(cfg.root or None, size=cfg.image_size, seed=cfg.seed)
    else:
        splits = digits_splits(size=cfg.image_size, seed=cfg.seed)
    return {s: TensorDataset(ds.images * 2 - 1, ds.targets) for s, ds in splits.items()}


def gan_subset(images: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """A fixed random `fraction` of `images` (at least one)."""
    n = max(1, round(fraction * len(images)))
    keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    return images[keep]


def train_classifier(splits: dict[str, TensorDataset], cfg: Config, run: Run) -> tuple[ResNet, float]:
    """A ResNet-8 digit classifier on the real training digits (through the loop core), and its test accuracy.

    Trained once per data and classifier setting, in `<out>/gan/classifiers/<key>/`: the points
    of a sweep share it, so they are measured in the same features (and the demo trains it once).
    """
    setting = {"data": {**dataclasses.asdict(cfg.data), "train_fraction": None},
               "classifier": dataclasses.asdict(cfg.classifier), "seed": cfg.seed}
    key = hashlib.sha1(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:12]
    sub = Run(run.path.parent / "classifiers" / key, run.device)
    loader = lambda s, shuffle, bs: DataLoader(splits[s], batch_size=bs, shuffle=shuffle)  # noqa: E731
    torch.manual_seed(cfg.seed)
    model = ResNet(NUM_CLASSES, n=1, in_channels=1)
    trainer = ClassifierTrainer(model, loader("val", False, 256), NUM_CLASSES)
    fit(trainer, loader("train", True, cfg.classifier.batch_size), cfg.classifier, sub, seed=cfg.seed)
    load_best(sub, {"model": model})
    out = predict(model.eval(), loader("test", False, 256))
    return model, float((out["pred"] == out["true"]).mean())


# --------------------------------------------------------------------------- the run


def build_pair(cfg: Config, settings: Settings, image_size: int) -> tuple[nn.Module, nn.Module]:
    m = cfg.model
    generator = GENERATORS.get(m.arch)(m.z_dim, image_size, 1, m.g_width)
    discriminator = DISCRIMINATORS.get(m.arch)(image_size, 1, settings.d_width, spectral_norm=settings.spectral_norm,
                                               minibatch_std=settings.minibatch_std)
    return generator, discriminator


def evaluation(evaluator: SampleEvaluator, n_grid: int):
    """The trainer's per-period evaluation: metrics, and the fixed-noise samples saved beside the checkpoints."""

    def evaluate(generator: nn.Module, discriminator: nn.Module, ctx: StepContext) -> dict[str, float]:
        metrics, fake, hist = evaluator(generator, discriminator)
        ctx.run.save_checkpoint(f"samples-{ctx.epoch:04d}", {"step": ctx.step, "samples": fake[:n_grid],
                                                            "class_hist": torch.tensor(hist)})
        return metrics

    return evaluate


def run(cfg: Config, run: Run) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.cpu_threads or threads)
    try:
        return _run(cfg, run)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: Config, run: Run) -> dict:
    settings = resolve(cfg)
    splits = load_images(cfg.data)
    images = {s: ds.tensors[0] for s, ds in splits.items()}  # (N, 1, S, S) each
    classifier, accuracy = train_classifier(splits, cfg, run)
    real = gan_subset(images["train"], settings.train_fraction, cfg.data.seed)
    seed_everything(cfg.seed)  # the pair's initial weights do not depend on the classifier having trained
    generator, discriminator = build_pair(cfg, settings, real.shape[-1])
    evaluator = SampleEvaluator(classifier, images["test"], real, images["val"], cfg.model.z_dim,
                                cfg.eval.n_samples, cfg.eval.min_share, settings.train.batch_size, cfg.seed)
    trainer = GanTrainer(generator, discriminator, settings.objective, evaluation(evaluator, cfg.eval.n_grid))
    result = fit(trainer, real_loader(real, settings.train), settings.train, run, seed=cfg.seed)
    summary = summarize(run, settings.train)
    summary.update(
        fit_summary(result, run, trainer), scenario=cfg.gan.scenario, scenario_what=SCENARIOS[cfg.gan.scenario].what,
        mitigations=mitigations_on(settings), settings=settings.flat(), classifier_accuracy=accuracy,
        frechet_real=evaluator.real_floor(images["train"]), n_gan_train=len(real), image_size=real.shape[-1],
        params_g=_params(generator), params_d=_params(discriminator),
    )
    run.save_summary(summary)
    return summary


def summarize(run: Run, train: GanTrainConfig) -> dict:
    """Headline numbers: the last evaluation, per-step values averaged over the last period, extremes."""
    epochs = [r for r in run.read_metrics() if "step" not in r]
    last = epochs[-1]
    out = {k: last[f"val/{k}"] for k in EVAL_KEYS}
    out.update({k: last[f"train/{k}"] for k in STEP_KEYS})
    samples = run.load_checkpoint(f"samples-{last['epoch']:04d}")
    out.update(class_hist=samples["class_hist"].tolist() if samples else [],
               min_classes_covered=min(r["val/classes_covered"] for r in epochs),
               max_d_gap=max(r["val/d_gap"] for r in epochs), steps=last["epoch"] * train.steps_per_epoch,
               seconds=float(np.sum([r["time/epoch"] for r in epochs])))
    return out


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


register(Experiment(
    name="gan",
    title="GAN training dynamics: vanishing gradients, mode collapse, D overfitting, mitigations",
    profiles={"smoke": smoke, "quick": quick, "full": full},
    run=run,
    sections=report_sections,
    sweep_sections=sweep_sections,
    check=check,
    headline=["classes_covered", "kl_uniform", "frechet", "g_grad_norm", "d_gap", "classifier_accuracy"],
    key_figure="samples",
    default_sweep={"gan.scenario": "vanishing,collapse,overfit", "gan.mitigation": "none,remedy",
                   "train.epochs": "3"},
    monitors=("val/frechet", "val/kl_uniform", "val/classes_covered", "val/d_gap"),
    budget_s=125,  # quick, measured in `run all` (one thread, beside another job)
))
