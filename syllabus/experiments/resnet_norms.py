"""`resnet-norms`: a ResNet of 6n+2 layers under six normalisations (assignment 1A, parts 1-2).

Trains one ResNet with the chosen normalisation, evaluates the best checkpoint on
train/val/test (accuracy, micro-F1, macro-F1), and reports curves, the confusion
matrix and time per epoch. `--sweep model.norm=bn,in,bin,ln,gn,none` compares all six;
`--sweep model.norm=bn,gn --sweep train.batch_size=8,128 --set train.early_stop=3` is
the batch-size study.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from syllabus.classify import ClassifierTrainer, predict, split_report
from syllabus.config import choice, nested, ranged
from syllabus.data.images import ImageDataConfig, check_image_data, image_splits
from syllabus.experiments import Experiment, register
from syllabus.experiments.resnet_norms_report import report_sections, sweep_sections
from syllabus.nn.norms import NORM_LAYERS, bin_rhos, constrain_norms_, get_norm_layer
from syllabus.nn.resnet import ResNet
from syllabus.runs import Run
from syllabus.train import TrainConfig, fit, fit_summary, load_best

SPLITS = ("train", "val", "test")


@dataclass
class ModelConfig:
    norm: str = choice("bn", NORM_LAYERS)
    n: int = ranged(2, 1)  # blocks per stage: depth 6n+2
    groups: int = ranged(8, 1)  # group count of "gn"


@dataclass
class Config:
    data: ImageDataConfig = nested(ImageDataConfig)
    model: ModelConfig = nested(ModelConfig)
    train: TrainConfig = nested(TrainConfig)
    seed: int = 0


def smoke() -> Config:
    return Config(
        data=ImageDataConfig(image_size=32, n_train=96, n_val=48, n_test=48),
        model=ModelConfig(n=1),
        train=TrainConfig(epochs=2, batch_size=32, optimizer="adam", lr=2e-3, weight_decay=0.0, log_every=1),
    )


def quick() -> Config:
    """The README's six-way table: 6 epochs on 4,000 images, about 2.7 min per normalisation on one
    thread. Shorter settings (2,500 images, 5 epochs) left BN at 0.31 test accuracy, a lesson about
    the schedule rather than the normalisation."""
    return Config(
        data=ImageDataConfig(image_size=32, n_train=4000, n_val=1000, n_test=1000),
        model=ModelConfig(n=2),
        train=TrainConfig(epochs=6, batch_size=32, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4),
    )


def full() -> Config:
    """The assignment: Indian Birds, 256x256, n=2, batch 32, SGD lr 1e-4, 50 epochs."""
    return Config(
        data=ImageDataConfig(name="birds", image_size=256, augment=True, num_workers=8),
        model=ModelConfig(n=2),
        train=TrainConfig(epochs=50, batch_size=32, optimizer="sgd", lr=1e-4, momentum=0.9, weight_decay=0.0,
                          schedule="step", step_size=20, gamma=0.1, precision="no", log_every=50),
    )


def build_model(cfg: Config, summary: dict) -> ResNet:
    """The run's ResNet; `summary` (or {"classes": [...]}) gives the number of classes."""
    norm_layer = get_norm_layer(cfg.model.norm, num_groups=cfg.model.groups)
    return ResNet(len(summary["classes"]), n=cfg.model.n, norm_layer=norm_layer)


def run(cfg: Config, run: Run) -> dict:
    torch.manual_seed(cfg.seed)
    data = image_splits(cfg.data)
    loader = lambda ds, shuffle, bs: DataLoader(ds, batch_size=bs, shuffle=shuffle, num_workers=cfg.data.num_workers)
    model = build_model(cfg, {"classes": data.classes})
    trainer = ClassifierTrainer(model, loader(data.eval_splits["val"], False, 256), len(data.classes),
                                after_update=constrain_norms_)
    result = fit(trainer, loader(data.splits["train"], True, cfg.train.batch_size), cfg.train, run, seed=cfg.seed)
    load_best(run, {"model": model})
    # every split scored with the evaluation transform, never on augmented images
    summary = evaluate_splits(model, {s: loader(data.eval_splits[s], False, 256) for s in SPLITS}, len(data.classes))
    summary.update(
        fit_summary(result, run, trainer), classes=data.classes, split_info=data.info, depth=6 * cfg.model.n + 2,
        norm=cfg.model.norm, batch_size=cfg.train.batch_size, lr=cfg.train.lr, bin_rho=bin_rhos(model),
    )
    run.save_summary(summary)
    return summary


def evaluate_splits(model: torch.nn.Module, loaders: dict[str, DataLoader], num_classes: int) -> dict:
    """Per-split metrics and confusion matrices, plus flat `split/metric` headline keys."""
    device = next(model.parameters()).device
    model.to(device)
    summary: dict = {"splits": {}}
    for split, loader in loaders.items():
        out = predict(model, loader)
        rep = split_report(out["true"], out["pred"], num_classes)
        summary["splits"][split] = rep
        for k in ("accuracy", "micro_f1", "macro_f1"):
            summary[f"{split}/{k}"] = rep[k]
    return summary



register(Experiment(
    name="resnet-norms",
    title="ResNet 6n+2 with BN / IN / BIN / LN / GN / none, written from scratch",
    profiles={"smoke": smoke, "quick": quick, "full": full},
    run=run,
    sections=report_sections,
    sweep_sections=sweep_sections,
    build_model=build_model,
    check=lambda cfg: check_image_data(cfg.data),
    headline=["test/accuracy", "test/micro_f1", "test/macro_f1", "val/accuracy", "time_per_epoch"],
    key_figure="accuracy_bars",
    default_sweep={"model.norm": "bn,in,bin,ln,gn,none"},
    monitors=("val/accuracy", "val/micro_f1", "val/macro_f1", "val/loss"),
    budget_s=1000,  # quick, measured in `run all` (one thread, beside another job)
))
