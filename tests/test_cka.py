"""Linear CKA against the HSIC formula written out in NumPy, and its invariances."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ortho_group

from syllabus.metrics.cka import cka_matrix, gram_cka, linear_cka


def hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. eq. 3-4 as written: tr(K H L H) / (n-1)^2 with an explicit centring matrix."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, lk = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h) / (n - 1) ** 2

    return hsic(k, lk) / np.sqrt(hsic(k, k) * hsic(lk, lk))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(4, 40), d1=st.integers(1, 60), d2=st.integers(1, 60))
def test_matches_the_hsic_formula(seed, n, d1, d2):
    # d > n exercises the Gram form, d < n the feature form
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d1))
    y = x[:, rng.integers(0, d1, d2)] * rng.normal(size=d2) + rng.normal(size=(n, d2))
    assert linear_cka(x, y) == pytest.approx(hsic_cka(x, y), rel=1e-9, abs=1e-12)


def test_feature_and_gram_forms_agree():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 8)), rng.normal(size=(30, 5))
    xc, yc = x - x.mean(0), y - y.mean(0)
    assert linear_cka(x, y) == pytest.approx(gram_cka(xc @ xc.T, yc @ yc.T), rel=1e-12)


def test_invariant_to_orthogonal_transforms_and_isotropic_scaling():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 12))
    y = np.tanh(x @ rng.normal(size=(12, 7))) + 0.3 * rng.normal(size=(50, 7))
    q1, q2 = ortho_group.rvs(12, random_state=2), ortho_group.rvs(7, random_state=3)
    ref = linear_cka(x, y)
    assert linear_cka(x @ q1, y @ q2) == pytest.approx(ref, rel=1e-10)
    assert linear_cka(3.7 * x, 0.01 * y) == pytest.approx(ref, rel=1e-10)
    assert linear_cka(x + 5.0, y - 2.0) == pytest.approx(ref, rel=1e-10)  # centring removes offsets


def test_not_invariant_to_anisotropic_scaling():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(60, 6))
    y = x @ rng.normal(size=(6, 6)) + 0.5 * rng.normal(size=(60, 6))
    scale = np.array([10.0, 1, 1, 1, 1, 0.1])
    assert abs(linear_cka(x * scale, y) - linear_cka(x, y)) > 0.05


def test_identical_and_independent_features():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2000, 4))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, rng.normal(size=(2000, 4))) < 0.02  # ~ D1 D2 / (N sqrt(D1 D2)) by chance


def test_matrix_is_pairwise_cka():
    rng = np.random.default_rng(6)
    feats = [rng.normal(size=(25, d)) for d in (3, 40, 9)]
    feats[2][:, :3] += 2 * feats[0]
    m = cka_matrix(feats)
    for i in range(3):
        for j in range(3):
            assert m[i, j] == pytest.approx(hsic_cka(feats[i], feats[j]), rel=1e-9)
    assert m[0, 2] > m[0, 1] + 0.2


def test_mismatched_rows_are_an_error():
    with pytest.raises(ValueError, match="same examples"):
        linear_cka(np.zeros((5, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="same examples"):
        cka_matrix([np.ones((5, 2)), np.ones((4, 2))])
