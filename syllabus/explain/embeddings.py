"""The geometry of a joint image-text embedding: modality gap, shifts, orthogonal Procrustes.

Pure functions on (N, D) arrays; rows are embeddings and are L2-normalised where a
function says so.

- Modality gap (Liang et al. 2022, "Mind the Gap", section 4): the distance between the
  centroids of the normalised image and text embeddings, ``||mean(x) - mean(y)||``.
- Shift (their section 4.2): move both modalities toward each other along the centroid
  difference ``delta = mean(x) - mean(y)``: ``x - lam/2 delta`` and ``y + lam/2 delta``,
  renormalised; ``lam = 1`` closes the gap before renormalising, ``lam < 0`` widens it.
- Orthogonal Procrustes (Schönemann 1966): the rotation ``R`` minimising ``||A R - B||_F``
  over orthogonal matrices is ``U V^T`` where ``U S V^T = A^T B``. Fitted on centred
  paired embeddings, ``x -> (x - mean_x) R + mean_y`` maps images into the text modality;
  the mean-shift baseline is the same with ``R = I``.

scikit-learn fits run under `syllabus.threads.small_blas` (the `--threads` given, else one BLAS
thread): the arrays are small, and threads on a busy CPU wait on each other longer than they compute.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from syllabus.threads import small_blas


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm. (N, D) -> (N, D)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def modality_gap(image: np.ndarray, text: np.ndarray) -> float:
    """Distance between the centroids of the normalised image (N, D) and text (M, D) embeddings."""
    return float(np.linalg.norm(normalize(image).mean(0) - normalize(text).mean(0)))


def gap_per_class(image: np.ndarray, text: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The gap within each class, for paired rows of image (N, D) and text (N, D) with labels (N,).

    Returns:
        (C,) gaps, NaN for a class without rows.
    """
    out = np.full(num_classes, np.nan)
    for c in range(num_classes):
        rows = labels == c
        if rows.any():
            out[c] = modality_gap(image[rows], text[rows])
    return out


def shift_toward(image: np.ndarray, text: np.ndarray, lam: float, delta: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Both modalities moved ``lam/2`` of the centroid difference toward each other, renormalised.

    Args:
        image: (N, D) embeddings.
        text: (M, D) embeddings.
        lam: fraction of the gap to close (1 = centroids meet before renormalising).
        delta: (D,) centroid difference image - text; measured on these rows when None
            (pass the one measured on train pairs to shift test embeddings).
    """
    x, y = normalize(image), normalize(text)
    if delta is None:
        delta = x.mean(0) - y.mean(0)  # (D,)
    return normalize(x - lam / 2 * delta), normalize(y + lam / 2 * delta)


def orthogonal_procrustes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The orthogonal (D, D) R minimising ||a R - b||_F for a (N, D), b (N, D)."""
    u, _, vt = np.linalg.svd(np.asarray(a, np.float64).T @ np.asarray(b, np.float64))  # (D, D) each
    return u @ vt


@dataclass
class ModalityMap:
    """``x -> normalize((x - source_mean) @ rotation + target_mean)``, from one modality to the other."""

    source_mean: np.ndarray  # (D,)
    target_mean: np.ndarray  # (D,)
    rotation: np.ndarray  # (D, D)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return normalize((normalize(x) - self.source_mean) @ self.rotation + self.target_mean)


def fit_mean_shift(source: np.ndarray, target: np.ndarray) -> ModalityMap:
    """Move normalised ``source`` rows by the difference of centroids (the rotation is the identity)."""
    x, y = normalize(source), normalize(target)
    return ModalityMap(x.mean(0), y.mean(0), np.eye(x.shape[1]))


def fit_procrustes(source: np.ndarray, target: np.ndarray) -> ModalityMap:
    """Centre both normalised paired sets (N, D) and fit the rotation of the centred source onto the target."""
    x, y = normalize(source), normalize(target)
    mx, my = x.mean(0), y.mean(0)
    return ModalityMap(mx, my, orthogonal_procrustes(x - mx, y - my))


def zero_shot_predict(image: np.ndarray, class_text: np.ndarray) -> np.ndarray:
    """Index of the most similar class embedding (C, D) for each image (N, D). (N,)."""
    return (normalize(image) @ normalize(class_text).T).argmax(1)


def modality_classifier_accuracy(image: np.ndarray, text: np.ndarray, seed: int = 0, test_size: float = 0.3
                                 ) -> float:
    """Held-out accuracy of a logistic regression telling image rows from text rows (normalised)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    x = np.concatenate([normalize(image), normalize(text)])  # (N + M, D)
    y = np.r_[np.zeros(len(image)), np.ones(len(text))]
    x_fit, x_test, y_fit, y_test = train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)
    with small_blas():
        clf = LogisticRegression(max_iter=1000).fit(x_fit, y_fit)
        return float(clf.score(x_test, y_test))


def project_2d(image: np.ndarray, text: np.ndarray, method: str = "pca", seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray]:
    """A 2-D view of both normalised modalities, fitted on them together: (N, 2) and (M, 2)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = np.concatenate([normalize(image), normalize(text)])  # (N + M, D)
    if method not in ("pca", "tsne"):
        raise ValueError(f"unknown projection {method!r}; valid: pca, tsne")
    with small_blas():
        if method == "pca":
            xy = PCA(2, random_state=seed).fit_transform(x)
        else:
            xy = TSNE(2, perplexity=min(30.0, (len(x) - 1) / 3), init="pca", random_state=seed).fit_transform(x)
    return xy[: len(image)], xy[len(image):]


# --- the studies of the `clip` experiment, as tables of plain numbers ---


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(labels))) if len(labels) else float("nan")


def shift_curve(fit_image: np.ndarray, fit_text: np.ndarray, image: np.ndarray, text: np.ndarray,
                class_text: np.ndarray, labels: np.ndarray, lams: list[float]) -> list[dict]:
    """Gap and zero-shot accuracy of test pairs as both modalities are shifted by ``lam``.

    The centroid difference comes from the fit pairs; the class embeddings (C, D) move with the texts.
    """
    delta = normalize(fit_image).mean(0) - normalize(fit_text).mean(0)  # (D,)
    rows = []
    for lam in lams:
        x, y = shift_toward(image, text, lam, delta)
        classes = shift_toward(image[:1], class_text, lam, delta)[1]  # (C, D)
        rows.append({"lambda": float(lam), "gap": modality_gap(x, y),
                     "accuracy": accuracy(zero_shot_predict(x, classes), labels)})
    return rows


def alignment_rows(fit_image: np.ndarray, fit_text: np.ndarray, image: np.ndarray, text: np.ndarray,
                   class_text: np.ndarray, labels: np.ndarray, fractions: list[float], seed: int = 0) -> list[dict]:
    """Test images mapped into the text modality by maps fitted on a fraction of the fit pairs.

    Each row: the map (none, mean shift, Procrustes), the fraction and number of pairs it
    saw, the gap to the test texts, the mean cosine of the test pairs, zero-shot accuracy.
    """
    def row(name: str, fraction: float, pairs: int, x: np.ndarray) -> dict:
        return {"map": name, "fraction": fraction, "pairs": pairs, "gap": modality_gap(x, text),
                "pair_cosine": float(np.mean(np.sum(normalize(x) * normalize(text), 1))),
                "accuracy": accuracy(zero_shot_predict(x, class_text), labels)}

    rows = [row("none", 0.0, 0, image)]
    rng = np.random.default_rng(seed)
    for fraction in fractions:
        idx = rng.choice(len(fit_image), max(2, round(fraction * len(fit_image))), replace=False)
        for name, fit in (("mean shift", fit_mean_shift), ("procrustes", fit_procrustes)):
            rows.append(row(name, float(fraction), len(idx), fit(fit_image[idx], fit_text[idx])(image)))
    return rows
