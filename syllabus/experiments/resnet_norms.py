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

from syllabus.classify import ClassificationTask, predict, split_report
from syllabus.config import choice, nested
from syllabus.data.images import ImageDataConfig, check_image_data, image_splits
from syllabus.experiments import Experiment, register
from syllabus.nn.norms import NORM_LAYERS, bin_rhos, constrain_norms_, get_norm_layer
from syllabus.nn.resnet import ResNet
from syllabus.runs import Run
from syllabus.train import TrainConfig, fit, fit_summary

SPLITS = ("train", "val", "test")


@dataclass
class ModelConfig:
    norm: str = choice("bn", NORM_LAYERS)
    n: int = 2  # blocks per stage: depth 6n+2
    groups: int = 8  # group count of "gn"


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
    return Config(
        data=ImageDataConfig(image_size=32, n_train=4000, n_val=1000, n_test=1000),
        model=ModelConfig(n=2),
        train=TrainConfig(epochs=7, batch_size=32, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4),
    )


def full() -> Config:
    """The assignment: Indian Birds, 256x256, n=2, batch 32, SGD lr 1e-4, 50 epochs."""
    return Config(
        data=ImageDataConfig(name="birds", image_size=256, augment=True, num_workers=8),
        model=ModelConfig(n=2),
        train=TrainConfig(epochs=50, batch_size=32, optimizer="sgd", lr=1e-4, momentum=0.9, weight_decay=0.0,
                          schedule="step", step_size=20, gamma=0.1, precision="no", log_every=50),
    )


def build_model(cfg: Config, num_classes: int) -> ResNet:
    norm_layer = get_norm_layer(cfg.model.norm, num_groups=cfg.model.groups)
    return ResNet(num_classes, n=cfg.model.n, norm_layer=norm_layer)


def run(cfg: Config, run: Run) -> dict:
    torch.manual_seed(cfg.seed)
    splits, classes, split_info = image_splits(cfg.data)
    loaders = {s: DataLoader(ds, batch_size=cfg.train.batch_size, shuffle=(s == "train"),
                             num_workers=cfg.data.num_workers) for s, ds in splits.items()}
    model = build_model(cfg, len(classes))
    task = ClassificationTask(len(classes))
    result = fit(model, loaders["train"], loaders["val"], task, cfg.train, run,
                 seed=cfg.seed, after_step=constrain_norms_)
    model.load_state_dict(run.load_checkpoint("best")["model"])
    eval_loaders = {s: DataLoader(splits[s], batch_size=256, num_workers=cfg.data.num_workers) for s in SPLITS}
    summary = evaluate_splits(model, eval_loaders, len(classes))
    summary.update(
        fit_summary(result, run, model), classes=classes, split_info=split_info, depth=6 * cfg.model.n + 2,
        norm=cfg.model.norm, batch_size=cfg.train.batch_size, bin_rho=bin_rhos(model),
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
    reports="syllabus.experiments.resnet_norms_report",
    check=lambda cfg: check_image_data(cfg.data),
    headline=["test/accuracy", "test/micro_f1", "test/macro_f1", "val/accuracy", "time_per_epoch"],
    default_sweep={"model.norm": "bn,in,bin,ln,gn,none"},
))
