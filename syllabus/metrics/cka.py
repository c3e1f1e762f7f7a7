"""Linear centered kernel alignment (CKA; Kornblith et al. 2019, "Similarity of Neural Network
Representations Revisited", eq. 3-5) between two sets of features of the same examples.

    HSIC(K, L) = tr(K H L H) / (n - 1)^2,   H = I - 1 1^T / n
    CKA(X, Y)  = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),   K = X X^T, L = Y Y^T

With linear kernels this equals ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) for column-centred
Xc, Yc (eq. 5). It is invariant to orthogonal transforms and isotropic scaling of either set, not
to arbitrary invertible linear maps. Pure functions on arrays, in float64; the (n, n) Gram form
is used whenever it is smaller than the feature form, so wide conv features stay cheap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _centred(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {x.shape}")
    return x - x.mean(0, keepdims=True)  # (N, D)


def centred_gram(x: np.ndarray) -> np.ndarray:
    """(N, D) features -> H K H, the doubly centred linear Gram matrix (N, N)."""
    xc = _centred(x)
    return xc @ xc.T  # centring the columns of X centres rows and columns of X X^T


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between (N, D1) and (N, D2) features of the same N examples, in [0, 1]."""
    xc, yc = _centred(x), _centred(y)
    if len(xc) != len(yc):
        raise ValueError(f"both feature sets must describe the same examples: {len(xc)} vs {len(yc)} rows")
    if min(xc.shape[1], yc.shape[1]) > len(xc):  # Gram form: (N, N) products are smaller
        return gram_cka(xc @ xc.T, yc @ yc.T)
    cross = np.linalg.norm(yc.T @ xc) ** 2  # ||Yc^T Xc||_F^2, (D2, D1) product
    denom = np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    return float(cross / denom) if denom > 0 else 0.0


def gram_cka(kc: np.ndarray, lc: np.ndarray) -> float:
    """CKA from two centred Gram matrices (N, N): <Kc, Lc>_F / (||Kc||_F ||Lc||_F)."""
    denom = np.linalg.norm(kc) * np.linalg.norm(lc)
    return float((kc * lc).sum() / denom) if denom > 0 else 0.0


def cka_matrix(features: Sequence[np.ndarray]) -> np.ndarray:
    """Pairwise linear CKA of several (N, D_i) feature sets of the same examples: (S, S), symmetric."""
    grams = [centred_gram(f) for f in features]  # S x (N, N)
    if len({g.shape for g in grams}) > 1:
        raise ValueError(f"all feature sets must describe the same examples, got {[len(g) for g in grams]} rows")
    norms = [np.linalg.norm(g) for g in grams]
    out = np.eye(len(grams))
    for i in range(len(grams)):
        for j in range(i + 1, len(grams)):
            denom = norms[i] * norms[j]
            out[i, j] = out[j, i] = (grams[i] * grams[j]).sum() / denom if denom > 0 else 0.0
    return out
