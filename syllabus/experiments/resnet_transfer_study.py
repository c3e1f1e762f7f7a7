"""The parts of `resnet-transfer`, each a function of a trained model and the data.

Every training goes through the loop core with `StudyTrainer`; the baseline trains in the run
directory itself (its curves are the page's), every other fit in `parts/<name>/` of it, so an
interrupted run resumes each fit where it stopped and a finished fit is only reloaded.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from syllabus.classify import ClassifierTrainer, predict, split_report
from syllabus.data.transfer import Task, per_class_subset
from syllabus.experiments.resnet_transfer_models import (
    blocks_per_stage,
    classify_map,
    forward_levels,
    layer_grad_norms,
    levels,
    main_path_layers,
    replace_head,
    skips_cut,
)
from syllabus.explain.features import extract_features, hierarchy_scores, tsne_2d
from syllabus.runs import Run
from syllabus.train import TrainConfig, fit, fit_summary, load_best

STRATEGIES = ("probe", "last", "all", "scratch")


class StudyTrainer(ClassifierTrainer):
    """The classifier trainer, plus per-layer gradient norms every `grad_every` updates and,
    with `backbone_lr_scale`, a lower learning rate for everything but the head `model.fc`.

    Args:
        model: maps images (or features) to logits.
        val_loader: the validation batches.
        num_classes: K.
        grad_every: record `layer_grad_norms(model)` every this many updates (0: never).
        backbone_lr_scale: the backbone's rate as a fraction of `train.lr` (None: one group).
    """

    def __init__(self, model: nn.Module, val_loader: DataLoader, num_classes: int, grad_every: int = 0,
                 backbone_lr_scale: float | None = None):
        super().__init__(model, val_loader, num_classes, after_update=self._after_update)
        self.grad_every, self.backbone_lr_scale = grad_every, backbone_lr_scale
        self.grad_log: list[list[float]] = []  # (records, layers)
        self.updates = 0

    def _after_update(self, model: nn.Module) -> None:
        self.updates += 1
        if self.grad_every and self.updates % self.grad_every == 0:
            self.grad_log.append(layer_grad_norms(model))

    def param_groups(self, cfg: TrainConfig) -> dict[str, list[dict]]:
        if self.backbone_lr_scale is None:
            return super().param_groups(cfg)
        head = list(self.model.fc.parameters())
        ids = {id(p) for p in head}
        body = [p for p in self.model.parameters() if id(p) not in ids]
        return {"main": [{"params": body, "lr_scale": self.backbone_lr_scale}, {"params": head}]}

    def extra_state(self) -> dict:
        return {"grad_log": torch.tensor(self.grad_log, dtype=torch.float32), "updates": self.updates}

    def load_extra_state(self, state: dict) -> None:
        self.grad_log = state["grad_log"].tolist() if "grad_log" in state else []
        self.updates = int(state.get("updates", 0))


class FrozenTrunk(nn.Module):
    """A ResNet whose levels before `first_trainable` are frozen: no gradients, batch-norm statistics fixed.

    Args:
        model: a ResNet `levels` knows, with its head `fc`.
        first_trainable: index into `levels(model)` (stem = 0) of the first level that trains.
    """

    def __init__(self, model: nn.Module, first_trainable: int):
        super().__init__()
        self.model, self.first = model, first_trainable
        for level in levels(model)[:first_trainable]:
            level.requires_grad_(False)

    def train(self, mode: bool = True) -> FrozenTrunk:
        super().train(mode)
        for level in levels(self.model)[:self.first]:
            level.train(False)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, K)
        with torch.no_grad():
            h = forward_levels(self.model, x, 0, self.first)
        return classify_map(self.model, forward_levels(self.model, h, self.first))


def part_run(run: Run, name: str) -> Run:
    return Run(run.path / "parts" / name, device=run.device)


def loader(ds: Dataset, batch_size: int = 256, shuffle: bool = False, workers: int = 0) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=workers)


def accuracy(model: nn.Module, batches: DataLoader) -> float:
    out = predict(model, batches)
    return float((out["true"] == out["pred"]).mean())


def train_classifier(model: nn.Module, train: Dataset, val: Dataset, num_classes: int, tcfg: TrainConfig, run: Run,
                     seed: int, workers: int = 0, **trainer_kw: Any) -> tuple[StudyTrainer, dict]:
    """Fit `model` on `train` (best checkpoint by `tcfg.monitor` on `val`), load the best weights back."""
    trainer = StudyTrainer(model, loader(val, workers=workers), num_classes, **trainer_kw)
    result = fit(trainer, loader(train, tcfg.batch_size, True, workers), tcfg, run, seed=seed)
    load_best(run, {"model": model})
    return trainer, fit_summary(result, run, trainer)


def score_splits(model: nn.Module, task: Task, workers: int = 0) -> dict:
    """Accuracy and F1 of every split (evaluation transform), with flat `split/metric` keys."""
    out: dict = {"splits": {}}
    for split, ds in task.eval_splits.items():
        pred = predict(model, loader(ds, workers=workers))
        rep = out["splits"][split] = split_report(pred["true"], pred["pred"], len(task.classes))
        out.update({f"{split}/{k}": rep[k] for k in ("accuracy", "macro_f1")})
    return out


def grad_record(model: nn.Module, trainer: StudyTrainer, every: int) -> dict:
    """The per-layer gradient norms a trainer kept: layer names, update index of each record, (R, L) norms."""
    log = trainer.grad_log
    return {"layers": [name for name, _ in main_path_layers(model)], "updates": [every * (i + 1) for i in
                                                                                 range(len(log))], "norms": log}


def early_late_ratio(norms: list[list[float]]) -> float | None:
    """Mean gradient norm of the first third of the conv layers over that of the last third (head excluded);
    None without records."""
    if not norms:
        return None
    g = np.asarray(norms, dtype=np.float64)[:, :-1]  # (R, L-1)
    third = max(1, g.shape[1] // 3)
    return float(g[:, :third].mean() / max(g[:, -third:].mean(), 1e-12))


def inference_cuts(model: nn.Module, test: Dataset, workers: int = 0) -> list[dict]:
    """Test accuracy of the trained intact model with the skips of one stage (then all) cut at inference."""
    n = blocks_per_stage(model)
    base = accuracy(model, loader(test, workers=workers))
    rows = [{"skips cut": "none", "test_accuracy": base, "drop": 0.0}]
    wheres = {f"stage{s + 1}": {(s, b) for b in range(k)} for s, k in enumerate(n)}
    wheres["all"] = {(s, b) for s, k in enumerate(n) for b in range(k)}
    for name, where in wheres.items():
        with skips_cut(model, where):
            acc = accuracy(model, loader(test, workers=workers))
        rows.append({"skips cut": name, "test_accuracy": acc, "drop": base - acc})
    return rows


def feature_hierarchy(model: nn.Module, task: Task, study: Any, seed: int, workers: int = 0) -> tuple[dict, dict]:
    """Scores per level (probe, silhouette, CKA) and the t-SNE maps of `study.tsne_points` test examples.

    `study` carries pool, probe_examples, tsne_points and tsne_iter (the experiment's `study.*`).
    """
    train, train_y = extract_features(model, loader(task.eval_splits["train"], workers=workers), study.pool,
                                      max_examples=study.probe_examples)
    test, test_y = extract_features(model, loader(task.eval_splits["test"], workers=workers), study.pool)
    scores = hierarchy_scores(train, train_y, test, test_y, seed=seed)
    m = min(study.tsne_points, len(test_y))
    maps = {"labels": test_y[:m].tolist(), "classes": task.classes,
            "points": {k: tsne_2d(v[:m], seed=seed, max_iter=study.tsne_iter).tolist() for k, v in test.items()}}
    return scores, maps


def transfer_study(source_model: nn.Module, make_fresh: Callable[[int], nn.Module], target: Task, tune: TrainConfig,
                   run: Run, labels: tuple[int, ...], strategies: tuple[str, ...], backbone_lr_scale: float,
                   min_steps: int, seed: int, data_seed: int, workers: int = 0) -> list[dict]:
    """Every strategy at every labels-per-class budget on the target task: one row each, with its val curve."""
    k = len(target.classes)
    last = len(levels(source_model)) - 1
    feats = {s: _penultimate(source_model, ds, workers) for s, ds in target.eval_splits.items()} \
        if "probe" in strategies else {}
    rows = []
    for per_class in labels:
        idx = per_class_subset(target.splits["train"].targets, per_class, data_seed)
        steps = max(math.ceil(len(idx) / tune.batch_size), min_steps, tune.steps_per_epoch)
        tcfg = replace(tune, steps_per_epoch=steps)
        budget = str(per_class) if per_class > 0 else "all"
        for strategy in strategies:
            torch.manual_seed(seed)
            lr_scale = backbone_lr_scale if strategy == "all" else None
            if strategy == "probe":
                model: nn.Module = nn.Linear(feats["train"].tensors[0].shape[1], k)
                train, val, test = Subset(feats["train"], idx), feats["val"], feats["test"]
            else:
                model = {"last": lambda: FrozenTrunk(replace_head(copy.deepcopy(source_model), k), last),
                         "all": lambda: replace_head(copy.deepcopy(source_model), k),
                         "scratch": lambda: make_fresh(k)}[strategy]()
                train, val, test = Subset(target.splits["train"], idx), target.eval_splits["val"], \
                    target.eval_splits["test"]
            sub = part_run(run, f"transfer-{strategy}-{budget}")
            _, fitted = train_classifier(model, train, val, k, tcfg, sub, seed, workers, backbone_lr_scale=lr_scale)
            curve = [r["val/accuracy"] for r in sub.read_metrics() if "val/accuracy" in r and "time/epoch" in r]
            rows.append({"strategy": strategy, "labels_per_class": budget, "train_examples": len(idx),
                         "test_accuracy": accuracy(model, loader(test, workers=workers)), "val_curve": curve,
                         "best_epoch": fitted["best_epoch"], "time_per_epoch": fitted["time_per_epoch"]})
    return rows


def _penultimate(model: nn.Module, ds: Dataset, workers: int) -> TensorDataset:
    """Globally pooled last-stage features of a frozen model (eval mode) with their labels."""
    feats, y = extract_features(model, loader(ds, workers=workers), pool=1)
    last = list(feats)[-1]
    return TensorDataset(torch.from_numpy(feats[last]), torch.from_numpy(y))
