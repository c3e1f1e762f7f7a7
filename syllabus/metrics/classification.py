"""Single-label classification metrics from one confusion matrix (NumPy only, no sklearn).

Every score here equals its scikit-learn counterpart with an explicit label set, which is what
makes runs with different data comparable (a class missing from one split still counts):

- ``accuracy``  == ``accuracy_score(y_true, y_pred)``
- ``micro_f1``  == ``f1_score(y_true, y_pred, labels=range(K), average="micro", zero_division=0)``
- ``macro_f1``  == ``f1_score(y_true, y_pred, labels=range(K), average="macro", zero_division=0)``

Per class ``k``, with ``tp`` the diagonal entry, ``true_k`` the row sum (support) and
``pred_k`` the column sum::

    F1_k = 2 * tp_k / (true_k + pred_k)     # == 2PR / (P + R), and 0 when true_k + pred_k == 0

so a class that is neither present in ``y_true`` nor ever predicted scores F1 = 0 and still
pulls the macro average down (it is averaged over all ``K`` classes). A class present but never
predicted, or predicted but never present, also scores 0. Micro-F1 applies the same formula to
the sums over classes; for single-label data with every label in ``[0, K)`` it equals accuracy.

Inputs may be NumPy arrays, sequences or torch tensors (on any device) of integer labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _as_labels(y: Any) -> np.ndarray:
    """Integer labels as a flat NumPy array; torch tensors are detached and moved to the CPU."""
    if hasattr(y, "detach"):  # torch.Tensor, without importing torch here
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    return y.reshape(-1).astype(np.int64)


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both label arrays, flat, after checking that they are non-empty and of equal length."""
    t, p = _as_labels(y_true), _as_labels(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    if t.size == 0:
        raise ValueError("no labels: metrics of an empty set are undefined")
    return t, p


def _checked_pair(y_true: Any, y_pred: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Like ``_pair``, and every label must lie in ``[0, num_classes)``."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    t, p = _pair(y_true, y_pred)
    for name, y in (("y_true", t), ("y_pred", p)):
        if y.min() < 0 or y.max() >= num_classes:
            raise ValueError(f"{name} has labels outside [0, {num_classes}): min {y.min()}, max {y.max()}")
    return t, p


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """Counts of (true, predicted) label pairs.

    Args:
        y_true: (N,) integer labels in ``[0, num_classes)``.
        y_pred: (N,) integer labels in ``[0, num_classes)``.
        num_classes: K, the number of classes (rows and columns even for unseen classes).

    Returns:
        (K, K) int64 array; ``cm[i, j]`` counts samples of true class i predicted as j.
    """
    t, p = _checked_pair(y_true, y_pred, num_classes)
    k = num_classes
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def _f1(tp: np.ndarray, true_sum: np.ndarray, pred_sum: np.ndarray) -> np.ndarray:
    """2·tp / (true + pred) elementwise, 0 where the denominator is 0 (zero_division=0)."""
    denom = (true_sum + pred_sum).astype(np.float64)
    num = 2.0 * tp.astype(np.float64)
    return np.divide(num, denom, out=np.zeros_like(denom), where=denom > 0)


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    """(K,) F1 of each class from a (K, K) confusion matrix; 0 for a class never seen nor predicted."""
    cm = np.asarray(cm)
    return _f1(np.diag(cm), cm.sum(axis=1), cm.sum(axis=0))


def metrics_from_confusion(cm: np.ndarray) -> dict[str, float]:
    """Accuracy, micro-F1 and macro-F1 (over all K classes) of a (K, K) confusion matrix.

    Useful when the matrix is summed over batches instead of built from all labels at once.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    total = cm.sum()
    if total == 0:
        raise ValueError("empty confusion matrix: metrics of an empty set are undefined")
    tp = np.trace(cm)
    return {
        "accuracy": float(tp / total),
        "micro_f1": float(_f1(np.asarray(tp), np.asarray(total), np.asarray(total))),
        "macro_f1": float(per_class_f1(cm).mean()),
    }


def classification_metrics(y_true: Any, y_pred: Any, num_classes: int) -> dict[str, float]:
    """``{"accuracy", "micro_f1", "macro_f1"}`` as Python floats, from one confusion matrix."""
    return metrics_from_confusion(confusion_matrix(y_true, y_pred, num_classes))


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of samples whose predicted label equals the true label."""
    t, p = _pair(y_true, y_pred)
    return float(np.count_nonzero(t == p) / t.size)


def micro_f1(y_true: Any, y_pred: Any, num_classes: int) -> float:
    """Micro-averaged F1 over labels ``range(num_classes)`` (equals accuracy for single-label data)."""
    return classification_metrics(y_true, y_pred, num_classes)["micro_f1"]


def macro_f1(y_true: Any, y_pred: Any, num_classes: int) -> float:
    """Unweighted mean of the F1 of all ``num_classes`` classes, absent ones included (as 0)."""
    return classification_metrics(y_true, y_pred, num_classes)["macro_f1"]
