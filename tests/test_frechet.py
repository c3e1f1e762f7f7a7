"""The Fréchet distance against clean-fid's and against closed forms."""

import numpy as np
import pytest
from cleanfid.fid import fid_from_feats
from cleanfid.fid import frechet_distance as cleanfid_frechet
from hypothesis import given, settings
from hypothesis import strategies as st

from syllabus.metrics.frechet import fid_from_features, frechet_distance, gaussian_stats

# clean-fid passes SciPy's deprecated `disp` and lets singular products warn; neither is ours
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:cleanfid.fid"),
              pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning:cleanfid.fid")]


def _random_stats(rng: np.random.Generator, dim: int, rank: int | None = None):
    a = rng.normal(size=(dim, rank or dim))
    return rng.normal(size=dim), a @ a.T / dim


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), dim=st.integers(2, 24))  # clean-fid fails on 1x1 with recent SciPy
def test_matches_cleanfid_on_random_statistics(seed, dim):
    rng = np.random.default_rng(seed)
    (mu1, s1), (mu2, s2) = _random_stats(rng, dim), _random_stats(rng, dim)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(cleanfid_frechet(mu1, s1, mu2, s2), rel=1e-6, abs=1e-8)


def test_matches_cleanfid_on_features():
    rng = np.random.default_rng(0)
    f1, f2 = rng.normal(size=(300, 16)), rng.normal(size=(200, 16)) * 1.5 + 0.3
    assert fid_from_features(f1, f2) == pytest.approx(fid_from_feats(f1, f2), rel=1e-9)


def test_one_dimension_closed_form():
    # N(m1, s1^2) vs N(m2, s2^2): (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]])) == \
        pytest.approx(9.0 + 1.0)


def test_identical_gaussians_are_at_distance_zero():
    mu, sigma = _random_stats(np.random.default_rng(1), 10)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_rank_deficient_covariances_give_a_finite_value_like_cleanfid():
    rng = np.random.default_rng(2)
    (mu1, s1), (mu2, s2) = _random_stats(rng, 12, rank=3), _random_stats(rng, 12, rank=2)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(ours) and ours == pytest.approx(cleanfid_frechet(mu1, s1, mu2, s2), rel=1e-4)


def test_gaussian_stats_are_mean_and_unbiased_covariance():
    f = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]])
    mu, sigma = gaussian_stats(f)
    np.testing.assert_allclose(mu, [2.0, 2.0])
    np.testing.assert_allclose(sigma, [[4.0, 3.0], [3.0, 3.0]])


def test_mismatched_shapes_are_an_error():
    with pytest.raises(ValueError, match="shapes do not match"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
