"""Image classification as a `Trainer` for the loop core, and evaluation helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from syllabus.metrics.classification import classification_metrics, confusion_matrix
from syllabus.train import StepContext, Trainer


class ClassifierTrainer(Trainer):
    """Cross-entropy on (image, label, ...) batches; val loss, accuracy, micro- and macro-F1.

    Args:
        model: maps (B, C, H, W) images to (B, K) logits.
        val_loader: the validation batches `evaluate` scores.
        num_classes: K (macro-F1 averages over all K).
        after_update: called with the model after every optimizer step (e.g. to clamp BIN's rho).
    """

    def __init__(self, model: nn.Module, val_loader: Iterable, num_classes: int,
                 after_update: Callable[[nn.Module], None] | None = None):
        self.model, self.val_loader, self.num_classes = model, val_loader, num_classes
        self.after_update = after_update

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def train_step(self, batch: Any, ctx: StepContext) -> dict[str, float]:
        x, y = ctx.to_device(batch[:2])  # (B, C, H, W), (B,)
        logits = self.model(x)  # (B, K)
        loss = F.cross_entropy(logits, y)
        ctx.update("main", loss)
        if self.after_update is not None:
            self.after_update(self.model)
        return {"loss": loss.item(), "accuracy": (logits.argmax(1) == y).float().mean().item()}

    def evaluate(self, ctx: StepContext) -> dict[str, float]:
        out = predict(self.model, ctx.prepare_eval(self.val_loader), ctx.accelerator)
        return {"loss": out["loss"], **classification_metrics(out["true"], out["pred"], self.num_classes)}


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable, accelerator: Any = None) -> dict[str, Any]:
    """Labels, predictions, softmax probabilities and mean loss of `model` over `loader`.

    With an `accelerator`, each process's results are gathered (a sharded loader gives every
    image once).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    trues, probs, losses = [], [], []
    for batch in loader:
        x, y = batch[0].to(device), batch[1].to(device)
        logits = model(x).float()  # (B, K)
        out = (logits.softmax(1), y, F.cross_entropy(logits, y, reduction="none"))  # (B, K), (B,), (B,)
        if accelerator is not None and accelerator.num_processes > 1:  # a sharded loader: every image once
            out = accelerator.gather_for_metrics(out)
        for store, value in zip((probs, trues, losses), out):
            store.append(value.cpu())
    model.train(was_training)
    prob = torch.cat(probs).numpy()  # (N, K)
    return {"true": torch.cat(trues).numpy(), "pred": prob.argmax(1), "prob": prob,
            "loss": float(torch.cat(losses).mean()) if losses else float("nan")}


def split_report(true: np.ndarray, pred: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Metrics and confusion matrix of one split, ready for summary.json."""
    return {**classification_metrics(true, pred, num_classes),
            "confusion": confusion_matrix(true, pred, num_classes).tolist()}
