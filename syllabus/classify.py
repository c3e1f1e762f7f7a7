"""Image classification as a `Task` for the training loop, and evaluation helpers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from syllabus.metrics.classification import classification_metrics, confusion_matrix


class ClassificationTask:
    """Cross-entropy on (image, label, ...) batches; accuracy, micro- and macro-F1.

    Args:
        num_classes: number of classes K (macro-F1 averages over all K).
    """

    def __init__(self, num_classes: int):
        self.num_classes = num_classes

    def step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict]:
        x, y = batch[0], batch[1]  # (B, C, H, W), (B,)
        logits = model(x)  # (B, K)
        loss = F.cross_entropy(logits, y)
        return loss, {"loss": loss.detach() * len(y), "n": len(y),
                      "pred": logits.argmax(1).detach(), "true": y.detach()}

    def summarize(self, extras: list[dict]) -> dict[str, float]:
        n = sum(e["n"] for e in extras)
        if n == 0:
            return {}
        loss = float(sum(e["loss"] for e in extras)) / n
        pred = torch.cat([e["pred"] for e in extras]).cpu().numpy()
        true = torch.cat([e["true"] for e in extras]).cpu().numpy()
        return {"loss": loss, **classification_metrics(true, pred, self.num_classes)}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Iterable, accelerator: Any = None) -> dict[str, float]:
        out = predict(model, loader, accelerator)
        metrics = classification_metrics(out["true"], out["pred"], self.num_classes)
        return {"loss": out["loss"], **metrics}


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable, accelerator: Any = None) -> dict[str, Any]:
    """Labels, predictions, softmax probabilities and mean loss of `model` over `loader`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    trues, probs, loss_sum, n = [], [], 0.0, 0
    for batch in loader:
        x, y = batch[0].to(device), batch[1].to(device)
        logits = model(x)  # (B, K)
        loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        p = logits.float().softmax(1)
        if accelerator is not None:
            p, y = accelerator.gather_for_metrics((p, y))
        probs.append(p.cpu())
        trues.append(y.cpu())
        n += len(batch[1])
    model.train(was_training)
    prob = torch.cat(probs).numpy()  # (N, K)
    return {"true": torch.cat(trues).numpy(), "pred": prob.argmax(1), "prob": prob,
            "loss": loss_sum / max(n, 1)}


def split_report(true: np.ndarray, pred: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Metrics and confusion matrix of one split, ready for summary.json."""
    return {**classification_metrics(true, pred, num_classes),
            "confusion": confusion_matrix(true, pred, num_classes).tolist()}
