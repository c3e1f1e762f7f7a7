"""ARI / FG-ARI against scikit-learn's adjusted_rand_score, and mIoU against brute-force matching."""

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import adjusted_rand_score

from syllabus.metrics.ari import adjusted_rand_index, contingency, fg_ari, masks_to_ids, mean_iou, segment_scores


def _sklearn_ari(true: np.ndarray, pred: np.ndarray, ignore_background: bool = False) -> np.ndarray:
    out = []
    for t, p in zip(true.reshape(len(true), -1), pred.reshape(len(pred), -1), strict=True):
        keep = t != 0 if ignore_background else np.ones_like(t, bool)
        out.append(adjusted_rand_score(t[keep], p[keep]))
    return np.array(out)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n_true=st.integers(1, 7), n_pred=st.integers(1, 9), side=st.integers(1, 12))
def test_ari_and_fg_ari_match_sklearn_on_random_masks(seed, n_true, n_pred, side):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, n_true, (5, side, side))
    pred = np.where(rng.random((5, side, side)) < 0.7, true, rng.integers(0, n_pred, (5, side, side)))
    for ignore in (False, True):
        ours = adjusted_rand_index(torch.from_numpy(true), torch.from_numpy(pred), ignore_background=ignore).numpy()
        np.testing.assert_allclose(ours, _sklearn_ari(true, pred, ignore), rtol=1e-10, atol=1e-12)


def test_adversarial_masks_match_sklearn():
    side = 8
    objects = np.zeros((side, side), np.int64)
    objects[:4, :4], objects[4:, 4:] = 1, 2
    cases = {
        "one segment vs objects": (objects, np.zeros_like(objects)),
        "objects vs one segment": (np.zeros_like(objects), objects),
        "all distinct vs objects": (objects, np.arange(side * side).reshape(side, side)),
        "all distinct both": (np.arange(side * side).reshape(side, side),) * 2,
        "empty foreground": (np.zeros_like(objects), np.arange(side * side).reshape(side, side) % 3),
        "relabelled": (objects, (objects + 5) % 3),
        "single pixel object": (np.pad(np.ones((1, 1), np.int64), ((0, 7), (0, 7))), objects),
    }
    for name, (t, p) in cases.items():
        tb, pb = t[None], p[None]
        for ignore in (False, True):
            ours = float(adjusted_rand_index(torch.from_numpy(tb), torch.from_numpy(pb), ignore)[0])
            assert ours == pytest.approx(_sklearn_ari(tb, pb, ignore)[0], abs=1e-12), (name, ignore)


def test_exact_values_of_known_cases():
    objects = torch.zeros(1, 8, 8, dtype=torch.long)
    objects[:, :4, :4], objects[:, 4:, 4:] = 1, 2
    assert float(adjusted_rand_index(objects, (objects + 1) % 3)[0]) == 1.0  # a permutation of ids
    assert float(adjusted_rand_index(objects, torch.zeros_like(objects))[0]) == 0.0  # one segment: chance
    assert float(fg_ari(objects, torch.zeros_like(objects))[0]) == 0.0  # fg pixels of 2 objects merged
    assert float(fg_ari(objects, objects.clamp(max=1))[0]) == 0.0  # fg: one segment again
    assert float(fg_ari(torch.zeros_like(objects), objects)[0]) == 1.0  # no fg pixel: sklearn's 1.0


def test_permuting_slots_leaves_ari_unchanged():
    g = torch.Generator().manual_seed(0)
    true = torch.randint(0, 5, (6, 16, 16), generator=g)
    masks = torch.rand(6, 7, 16, 16, generator=g).softmax(1)  # (B, K, H, W)
    perm = torch.randperm(7, generator=g)
    a = adjusted_rand_index(true, masks_to_ids(masks))
    b = adjusted_rand_index(true, masks_to_ids(masks[:, perm]))
    assert torch.equal(a, b) and a.abs().max() > 0


def test_contingency_counts_pixels():
    true = torch.tensor([[0, 0, 1, 1, 2]])
    pred = torch.tensor([[1, 1, 1, 0, 0]])
    expected = [[[0, 2], [1, 1], [1, 0]]]
    assert contingency(true, pred).tolist() == expected
    assert contingency(true, pred, ignore=true == 0).tolist() == [[[0, 0], [1, 1], [1, 0]]]


def _brute_force_miou(t: np.ndarray, p: np.ndarray) -> float:
    segs_t, segs_p = np.unique(t), list(np.unique(p))
    iou = np.array([[((t == a) & (p == b)).sum() / ((t == a) | (p == b)).sum() for b in segs_p] for a in segs_t])
    padded = np.pad(iou, ((0, 0), (0, max(0, len(segs_t) - len(segs_p)))))  # unmatched -> 0
    best = max(padded[np.arange(len(segs_t)), list(perm)].sum()
               for perm in itertools.permutations(range(padded.shape[1]), len(segs_t)))
    return best / len(segs_t)


def test_mean_iou_matches_brute_force_matching():
    rng = np.random.default_rng(3)
    true = rng.integers(0, 4, (8, 6, 6))
    pred = np.where(rng.random((8, 6, 6)) < 0.6, (true + 1) % 4, rng.integers(0, 3, (8, 6, 6)))
    ours = mean_iou(torch.from_numpy(true), torch.from_numpy(pred)).numpy()
    np.testing.assert_allclose(ours, [_brute_force_miou(t, p) for t, p in zip(true, pred, strict=True)], rtol=1e-12)


def test_segment_scores_of_a_perfect_prediction():
    true = torch.randint(0, 4, (3, 10, 10), generator=torch.Generator().manual_seed(1))
    assert segment_scores(true, (true * 7) % 11) == {"ari": 1.0, "fg_ari": 1.0, "miou": 1.0}


def test_bad_ids_are_errors():
    with pytest.raises(ValueError, match="integer"):
        adjusted_rand_index(torch.rand(2, 4), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        adjusted_rand_index(torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 5, dtype=torch.long))
