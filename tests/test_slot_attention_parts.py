"""Compositional generation pieces, the offline feature space, and the segmentation baselines."""

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from syllabus.explain.segment_baselines import BASELINES
from syllabus.explain.slots import cluster_slots, compose_slot_sets, feature_space, frechet_to


def test_kmeans_recovers_separated_slot_clusters_and_sets_take_one_slot_of_each():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[10.0, 0, 0], [0, 10.0, 0], [0, 0, 10.0]])
    truth = torch.arange(60) % 3
    library = centres[truth] + 0.1 * torch.randn(60, 3, generator=g)  # (M, D)
    labels, found = cluster_slots(library, 3, seed=0)
    assert adjusted_rand_score(truth.numpy(), labels) == 1.0
    sets = compose_slot_sets(library, labels, n=50, k=3, generator=g)  # (n, k, D)
    assert sets.shape == (50, 3, 3)
    picked = torch.cdist(sets.reshape(-1, 3), centres).argmin(1).reshape(50, 3)  # cluster of each slot
    assert all(sorted(row.tolist()) == [0, 1, 2] for row in picked)
    members = {tuple(r) for r in library.tolist()}
    assert all(tuple(s) in members for s in sets.reshape(-1, 3).tolist())  # real slots, not centres
    assert len({tuple(s) for s in sets[:, 0].tolist()}) > 5  # drawn, not always the same member


def test_offline_feature_space_is_labelled_and_separates_sets():
    space = feature_space(prefer_inception=False)
    assert not space.is_inception and "NOT Inception" in space.name
    g = torch.Generator().manual_seed(0)
    a = torch.rand(60, 3, 32, 32, generator=g)
    b = torch.rand(60, 3, 32, 32, generator=g)
    dark = a * 0.3
    assert np.array_equal(space.features(a), space.features(a))  # a fixed network
    near, far = frechet_to(space, a, b), frechet_to(space, dark, b)
    assert far > 10 * near > 0


def test_baselines_on_flat_colour_regions():
    images = torch.zeros(2, 3, 16, 16)
    images[:, 0, :, :8] = 1.0  # red left half
    images[:, 2, 4:12, 10:14] = 1.0  # a blue block on the black right half
    truth = torch.zeros(2, 16, 16, dtype=torch.long)
    truth[:, :, :8] = 1
    truth[:, 4:12, 10:14] = 2
    ids = BASELINES["k-means colour"](images, 3, 0)
    assert adjusted_rand_score(truth[0].flatten(), ids[0].flatten()) == 1.0
    assert BASELINES["one segment"](images, 3, 0).unique().tolist() == [0]
    ids = BASELINES["k-means colour+position"](images, 3, 0)
    assert ids.shape == (2, 16, 16) and adjusted_rand_score(truth[0].flatten(), ids[0].flatten()) > 0.5
