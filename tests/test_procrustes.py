"""Modality gap, shifts and orthogonal Procrustes against SciPy and closed forms."""

import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes as scipy_procrustes
from scipy.stats import special_ortho_group

from syllabus.explain.embeddings import (
    fit_mean_shift,
    fit_procrustes,
    gap_per_class,
    modality_classifier_accuracy,
    modality_gap,
    normalize,
    orthogonal_procrustes,
    project_2d,
    shift_toward,
    zero_shot_predict,
)


def _paired(seed: int, n: int = 200, d: int = 16, noise: float = 0.05):
    """Images, and texts that are a rotated, shifted, noisy copy of them (both normalised)."""
    rng = np.random.default_rng(seed)
    x = normalize(rng.normal(size=(n, d)) + 2.0)
    rot = special_ortho_group.rvs(d, random_state=seed)
    y = normalize(x @ rot + 0.5 + noise * rng.normal(size=(n, d)))
    return x, y, rot


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_procrustes_matches_scipy(seed):
    x, y, _ = _paired(seed)
    ours = orthogonal_procrustes(x - x.mean(0), y - y.mean(0))
    theirs, _ = scipy_procrustes(x - x.mean(0), y - y.mean(0))
    np.testing.assert_allclose(ours, theirs, atol=1e-10)
    np.testing.assert_allclose(ours @ ours.T, np.eye(16), atol=1e-10)


def test_no_rotation_fits_better_than_procrustes():
    x, y, true_rot = _paired(3, n=60, d=8, noise=0.3)
    a, b = x - x.mean(0), y - y.mean(0)
    best = np.linalg.norm(a @ orthogonal_procrustes(a, b) - b)
    others = [special_ortho_group.rvs(8, random_state=s) for s in range(200)] + [np.eye(8), true_rot]
    # a reflection or a small perturbation of the optimum (re-orthogonalised) is also no better
    r = orthogonal_procrustes(a, b)
    for s in range(20):
        u, _, vt = np.linalg.svd(r + 0.01 * np.random.default_rng(s).normal(size=(8, 8)))
        others.append(u @ vt)
    assert all(np.linalg.norm(a @ q - b) >= best - 1e-12 for q in others)
    assert np.linalg.norm(a @ true_rot - b) > best  # the noise makes the generating rotation suboptimal


def test_procrustes_recovers_an_exact_rotation():
    x, y, rot = _paired(4, noise=0.0)
    y = x @ rot  # no shift, no renormalisation: exactly a rotation
    np.testing.assert_allclose(orthogonal_procrustes(x, y), rot, atol=1e-8)


def test_gap_is_zero_for_identical_embeddings_and_rotation_invariant():
    x, y, _ = _paired(5)
    assert modality_gap(x, x) == pytest.approx(0.0, abs=1e-12)
    gap = modality_gap(x, y)
    assert gap > 0.1
    q = special_ortho_group.rvs(16, random_state=9)
    assert modality_gap(x @ q, y @ q) == pytest.approx(gap, rel=1e-10)


def test_gap_is_centroid_distance_by_hand():
    x = np.array([[1.0, 0.0], [0.0, 2.0]])  # normalised: (1, 0), (0, 1); centroid (0.5, 0.5)
    y = np.array([[-3.0, 0.0]])  # normalised: (-1, 0)
    assert modality_gap(x, y) == pytest.approx(np.hypot(1.5, 0.5))


def test_gap_per_class_uses_only_that_class():
    x, y, _ = _paired(6, n=40)
    labels = np.repeat([0, 1], 20)
    got = gap_per_class(x, y, labels, 3)
    assert got[0] == pytest.approx(modality_gap(x[:20], y[:20]))
    assert got[1] == pytest.approx(modality_gap(x[20:], y[20:]))
    assert np.isnan(got[2])


def test_full_shift_shrinks_the_gap_and_negative_shift_widens_it():
    x, y, _ = _paired(7)
    gap = modality_gap(x, y)
    assert modality_gap(*shift_toward(x, y, 0.0)) == pytest.approx(gap)
    assert modality_gap(*shift_toward(x, y, 1.0)) < 0.2 * gap
    assert modality_gap(*shift_toward(x, y, -0.5)) > gap


def test_procrustes_map_aligns_held_out_pairs_better_than_mean_shift():
    x, y, _ = _paired(8, n=300)
    fit, test = slice(0, 200), slice(200, 300)
    proc, shift = fit_procrustes(x[fit], y[fit]), fit_mean_shift(x[fit], y[fit])
    err = {name: np.linalg.norm(m(x[test]) - y[test], axis=1).mean() for name, m in [("p", proc), ("s", shift)]}
    assert err["p"] < 0.5 * err["s"]
    assert modality_gap(proc(x[test]), y[test]) < 0.1
    np.testing.assert_allclose(shift.rotation, np.eye(16))


def test_zero_shot_predict_picks_the_most_similar_class():
    classes = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    images = np.array([[2.0, 0.1], [0.1, 3.0], [-1.0, -0.2]])
    np.testing.assert_array_equal(zero_shot_predict(images, classes), [0, 1, 2])


def test_modality_classifier_separates_a_gap_and_not_identical_sets():
    x, y, _ = _paired(10, n=200)
    assert modality_classifier_accuracy(x, y) > 0.95
    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, 16))
    assert modality_classifier_accuracy(z[:200], z[200:]) < 0.7


def test_pca_view_separates_the_modalities():
    x, y, _ = _paired(11, n=100)
    a, b = project_2d(x, y, "pca")
    assert a.shape == (100, 2) and b.shape == (100, 2)
    assert np.linalg.norm(a.mean(0) - b.mean(0)) > 0.3
    with pytest.raises(ValueError, match="unknown projection"):
        project_2d(x, y, "umap")
