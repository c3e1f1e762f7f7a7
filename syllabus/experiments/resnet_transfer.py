"""`resnet-transfer`: a ResNet trained, ablated, dissected and transferred (ATML assignment, task 1).

1. Baseline: train on the source task (quick: our ResNet-(6n+2) from scratch on `shapes`;
   full: torchvision's ResNet-152 fine-tuned from ImageNet weights on CIFAR-10).
2. Residual ablation: the same network trained the same way with the skips of every block
   removed, and of a chosen subset; per-layer gradient norms over training; the trained intact
   model with the skips of one stage at a time cut at inference.
3. Feature hierarchy: every stage's features on the test set: t-SNE, silhouette, linear probe,
   linear CKA between stages.
4. Transfer to a task with more, finer classes (quick: shape x colour group, 36 classes;
   full: CIFAR-100): linear probe on frozen features, fine-tune the last stage, fine-tune all
   (backbone at a lower rate), from scratch; at several label budgets per class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from syllabus.config import choice, nested, ranged
from syllabus.data.transfer import Task, TransferDataConfig, check_transfer_data, transfer_tasks
from syllabus.errors import UsageError
from syllabus.experiments import Experiment, register
from syllabus.experiments.resnet_transfer_models import (
    INITS,
    TV_BLOCKS,
    cut_skips,
    parse_blocks,
    small_resnet,
    torchvision_resnet,
    weights_available,
)
from syllabus.experiments.resnet_transfer_report import report_sections
from syllabus.experiments.resnet_transfer_study import (
    STRATEGIES,
    early_late_ratio,
    feature_hierarchy,
    grad_record,
    inference_cuts,
    part_run,
    score_splits,
    train_classifier,
    transfer_study,
)
from syllabus.nn.norms import NORM_LAYERS
from syllabus.runs import Run, write_json
from syllabus.train import TrainConfig

MONITORS = ("val/accuracy", "val/macro_f1", "val/micro_f1", "val/loss")
ARCHS = ("small", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


@dataclass
class ModelConfig:
    arch: str = choice("small", ARCHS)  # small: our ResNet-(6n+2); else torchvision's
    weights: str = "none"  # torchvision: a weight set (IMAGENET1K_V2), a .pth file, or none
    n: int = ranged(3, 1)  # small: blocks per stage
    widths: tuple[int, ...] = (16, 32, 64)  # small: filters per stage
    norm: str = choice("torch-bn", NORM_LAYERS)  # small
    init: str = choice("kaiming", INITS)  # small: initialisation of the convolutions
    cut: str = ""  # blocks the baseline trains without skips ("" = intact; see parse_blocks)


@dataclass
class StudyConfig:
    ablation: str = "all,stage1"  # skip removals trained beside the baseline (comma-separated; "" = none)
    grad_every: int = ranged(5, 1)  # updates between per-layer gradient-norm records
    pool: int = ranged(1, 1)  # stage features averaged to a pool x pool grid
    probe_examples: int = ranged(2000, 10)  # source train examples the per-stage probes fit on
    tsne_points: int = ranged(400, 10)  # test examples in each t-SNE map
    tsne_iter: int = ranged(1000, 250)  # t-SNE optimisation steps
    strategies: tuple[str, ...] = STRATEGIES
    labels: tuple[int, ...] = (5, 20, 0)  # target labels per class; 0 = all
    backbone_lr_scale: float = ranged(0.1, 0, 1, lo_open=True)  # fine-tune all: backbone rate / head rate
    min_steps: int = ranged(10, 0)  # at least this many steps per transfer epoch (small budgets repeat)


@dataclass
class Config:
    data: TransferDataConfig = nested(TransferDataConfig)
    model: ModelConfig = nested(ModelConfig)
    study: StudyConfig = nested(StudyConfig)
    train: TrainConfig = nested(TrainConfig)  # the source task (baseline and ablation)
    tune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=5, lr=0.02))  # the target task
    seed: int = 0


def smoke() -> Config:
    return Config(
        data=TransferDataConfig(n_train=120, n_val=48, n_test=48),
        model=ModelConfig(n=1, widths=(4, 8, 8)),
        study=StudyConfig(ablation="all", grad_every=1, probe_examples=40, tsne_points=24, tsne_iter=250,
                         labels=(1, 0), min_steps=1),
        train=TrainConfig(epochs=2, batch_size=16, optimizer="adam", lr=2e-3, weight_decay=0.0, log_every=1),
        tune=TrainConfig(epochs=1, batch_size=16, optimizer="adam", lr=2e-3, weight_decay=0.0, log_every=0),
    )


def quick() -> Config:
    """ResNet-32 (widths 8/16/32) on 2,000 shapes images, then 36 finer classes from 1,000 others; about 2 min."""
    return Config(
        data=TransferDataConfig(n_train=3000, n_val=600, n_test=1000, source_share=2 / 3),
        model=ModelConfig(n=5, widths=(8, 16, 32)),
        study=StudyConfig(ablation="all", labels=(5, 0), tsne_points=300, tsne_iter=500, probe_examples=1000),
        train=TrainConfig(epochs=3, batch_size=32, optimizer="adam", lr=2e-3, weight_decay=0.0),
        tune=TrainConfig(epochs=3, batch_size=32, optimizer="adam", lr=2e-3, weight_decay=0.0),
    )


def full() -> Config:
    """ImageNet ResNet-152 fine-tuned on CIFAR-10 (224 px), then transferred to CIFAR-100."""
    return Config(
        data=TransferDataConfig(name="cifar", image_size=224, augment=True, num_workers=8),
        model=ModelConfig(arch="resnet152", weights="IMAGENET1K_V2"),
        study=StudyConfig(ablation="all,stage4", grad_every=20, probe_examples=5000, tsne_points=2000,
                          labels=(5, 20, 0), min_steps=20),
        train=TrainConfig(epochs=5, batch_size=64, optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4,
                          precision="bf16", log_every=50),
        tune=TrainConfig(epochs=5, batch_size=64, optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4,
                         precision="bf16", log_every=50),
    )


def make_model(cfg: Config, num_classes: int, cut: str = "", pretrained: bool = True) -> nn.Module:
    """The configured network with `num_classes` outputs and the skips of `cut` removed."""
    if cfg.model.arch == "small":
        return small_resnet(num_classes, cfg.model.n, cfg.model.widths, cfg.model.norm, cut, cfg.model.init)
    weights = cfg.model.weights if pretrained else "none"
    model = torchvision_resnet(cfg.model.arch, weights, num_classes, cfg.data.download)
    cut_skips(model, parse_blocks(cut, TV_BLOCKS[cfg.model.arch]))
    return model


def build_model(cfg: Config, summary: dict) -> nn.Module:
    """The baseline source model of a run (for `load_trained`); no weights are fetched, the checkpoint fills them."""
    return make_model(cfg, len(summary["classes"]), cfg.model.cut, pretrained=False)


def check(cfg: Config) -> None:
    check_transfer_data(cfg.data)
    if cfg.tune.monitor not in MONITORS:
        raise UsageError(f"tune.monitor {cfg.tune.monitor!r} is not a metric of resnet-transfer; "
                         f"valid: {', '.join(MONITORS)}")
    unknown = set(cfg.study.strategies) - set(STRATEGIES)
    if unknown:
        raise UsageError(f"study.strategies: unknown {sorted(unknown)}; valid: {', '.join(STRATEGIES)}")
    if cfg.model.arch == "small":
        blocks = [cfg.model.n] * len(cfg.model.widths)
    else:
        weights_available(cfg.model.arch, cfg.model.weights, cfg.data.download)
        blocks = TV_BLOCKS[cfg.model.arch]
    parse_blocks(cfg.model.cut, blocks, key="model.cut")
    for cut in _ablations(cfg):
        parse_blocks(cut, blocks, key="study.ablation")


def _ablations(cfg: Config) -> list[str]:
    return [a.strip() for a in cfg.study.ablation.split(",") if a.strip()]


def run(cfg: Config, run: Run) -> dict:
    source, target, info = transfer_tasks(cfg.data)
    workers = cfg.data.num_workers
    model, scores, grads = _train_source(cfg, source, run, cfg.model.cut)
    summary = {**scores, "classes": source.classes, "target_classes": target.classes, "data_info": info}
    grads = {"intact": grads}
    ablation = {"intact": _ablation_row(scores, grads["intact"])}
    for cut in _ablations(cfg):
        _, scores, grads[cut] = _train_source(cfg, source, part_run(run, f"ablation-{cut.replace('+', '_')}"), cut)
        ablation[cut] = _ablation_row(scores, grads[cut])
    summary["ablation"] = ablation
    if "all" in ablation:
        summary["ablation_gap"] = ablation["intact"]["test_accuracy"] - ablation["all"]["test_accuracy"]
    summary["inference_cuts"] = inference_cuts(model, source.eval_splits["test"], workers)
    summary["hierarchy"], maps = feature_hierarchy(model, source, cfg.study, cfg.seed, workers)
    rows = transfer_study(model, lambda n: _fresh(cfg, n), target, cfg.tune, run, cfg.study.labels,
                          cfg.study.strategies, cfg.study.backbone_lr_scale, cfg.study.min_steps, cfg.seed,
                          cfg.data.seed, workers)
    summary["transfer"] = rows
    summary.update({f"transfer/{r['strategy']}": r["test_accuracy"] for r in rows if r["labels_per_class"] == "all"})
    write_json(run.path / "analysis.json", {"grad_norms": grads, "tsne": maps})
    run.save_summary(summary)
    return summary


def _train_source(cfg: Config, source: Task, run: Run, cut: str) -> tuple[nn.Module, dict, dict]:
    """Train the configured network with the skips of `cut` removed on the source task, in `run`."""
    torch.manual_seed(cfg.seed)
    model = make_model(cfg, len(source.classes), cut)
    trainer, fitted = train_classifier(model, source.splits["train"], source.eval_splits["val"], len(source.classes),
                                       cfg.train, run, cfg.seed, cfg.data.num_workers, grad_every=cfg.study.grad_every)
    scores = {**score_splits(model, source, cfg.data.num_workers), **fitted}
    return model, scores, grad_record(model, trainer, cfg.study.grad_every)


def _ablation_row(scores: dict, grads: dict) -> dict:
    return {"test_accuracy": scores["test/accuracy"], "val_accuracy": scores["val/accuracy"],
            "best_epoch": scores["best_epoch"], "grad_early_late": early_late_ratio(grads["norms"])}


def _fresh(cfg: Config, num_classes: int) -> nn.Module:
    """The same architecture, randomly initialised (the from-scratch strategy)."""
    return make_model(cfg, num_classes, cfg.model.cut, pretrained=False)


register(Experiment(
    name="resnet-transfer",
    title="ResNet: baseline, residual ablation, feature hierarchy, transfer to finer classes",
    profiles={"smoke": smoke, "quick": quick, "full": full},
    run=run,
    sections=report_sections,
    build_model=build_model,
    check=check,
    headline=["test/accuracy", "ablation_gap", "transfer/probe", "transfer/last", "transfer/all", "transfer/scratch"],
    key_figure="transfer_labels",
    monitors=MONITORS,
    budget_s=165,  # quick, measured in `run all` (one thread, beside another job)
))
