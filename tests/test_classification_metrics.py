"""Classification metrics against scikit-learn (the reference) and one hand-computed case."""

import numpy as np
import pytest
import sklearn.metrics as skm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from syllabus.metrics.classification import (
    accuracy,
    classification_metrics,
    confusion_matrix,
    macro_f1,
    metrics_from_confusion,
    micro_f1,
    per_class_f1,
)


@st.composite
def label_pairs(draw):
    """(y_true, y_pred, K) where both sides may use only a subset of the K classes.

    Drawing each side from its own random subset makes classes that are never predicted,
    classes absent from y_true, and classes missing from both common rather than rare.
    """
    k = draw(st.integers(1, 15))
    n = draw(st.integers(1, 80))
    classes = st.lists(st.integers(0, k - 1), min_size=1, max_size=k, unique=True)
    true_classes, pred_classes = draw(classes), draw(classes)
    y_true = draw(st.lists(st.sampled_from(true_classes), min_size=n, max_size=n))
    y_pred = draw(st.lists(st.sampled_from(pred_classes), min_size=n, max_size=n))
    return np.array(y_true), np.array(y_pred), k


def _sklearn_f1(y_true, y_pred, k, average):
    return skm.f1_score(y_true, y_pred, labels=list(range(k)), average=average, zero_division=0)


# sklearn warns that a (1, 1) matrix may hide labels; with labels=range(K) it does not.
@pytest.mark.filterwarnings("ignore:A single label was found")
@settings(max_examples=300, deadline=None)
@given(label_pairs())
def test_matches_sklearn(case):
    y_true, y_pred, k = case
    got = classification_metrics(y_true, y_pred, k)
    expected = {"accuracy": skm.accuracy_score(y_true, y_pred), "micro_f1": _sklearn_f1(y_true, y_pred, k, "micro"),
                "macro_f1": _sklearn_f1(y_true, y_pred, k, "macro")}
    singles = {"accuracy": accuracy(y_true, y_pred), "micro_f1": micro_f1(y_true, y_pred, k),
               "macro_f1": macro_f1(y_true, y_pred, k)}
    for name, value in expected.items():  # the combined call and each function alone, against sklearn
        assert got[name] == pytest.approx(value, abs=1e-12), name
        assert singles[name] == pytest.approx(value, abs=1e-12), name
    np.testing.assert_array_equal(
        confusion_matrix(y_true, y_pred, k),
        skm.confusion_matrix(y_true, y_pred, labels=list(range(k))),
    )
    np.testing.assert_allclose(
        per_class_f1(confusion_matrix(y_true, y_pred, k)),
        _sklearn_f1(y_true, y_pred, k, None),
        rtol=0,
        atol=1e-12,
    )


def test_hand_computed_example():
    # K = 4; class 3 is neither present nor predicted, so it counts as F1 = 0 in the macro mean.
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 0, 2]
    cm = confusion_matrix(y_true, y_pred, 4)
    expected_cm = [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    np.testing.assert_array_equal(cm, expected_cm)
    # F1_k = 2 tp / (row sum + col sum): 2/4, 4/5, 2/3, 0.
    np.testing.assert_allclose(per_class_f1(cm), [0.5, 0.8, 2 / 3, 0.0], rtol=0, atol=1e-15)
    got = classification_metrics(y_true, y_pred, 4)
    assert got == pytest.approx({"accuracy": 2 / 3, "micro_f1": 2 / 3, "macro_f1": 59 / 120}, abs=1e-15)
    assert all(type(v) is float for v in got.values())


def test_torch_tensors_give_the_same_result_as_numpy():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 7, 200), rng.integers(0, 7, 200)
    expected = classification_metrics(y_true, y_pred, 7)
    assert classification_metrics(torch.from_numpy(y_true), torch.from_numpy(y_pred), 7) == expected
    np.testing.assert_array_equal(
        confusion_matrix(torch.from_numpy(y_true), torch.from_numpy(y_pred), 7),
        confusion_matrix(y_true, y_pred, 7),
    )


def test_metrics_from_summed_batches_equal_metrics_of_all_labels():
    rng = np.random.default_rng(1)
    y_true, y_pred = rng.integers(0, 5, 90), rng.integers(0, 5, 90)
    summed = sum(confusion_matrix(t, p, 5) for t, p in zip(np.split(y_true, 3), np.split(y_pred, 3), strict=True))
    assert metrics_from_confusion(summed) == classification_metrics(y_true, y_pred, 5)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "k", "message"),
    [
        ([0, 1], [0], 2, "differ in length"),
        ([0, 2], [0, 1], 2, "outside"),
        ([0, 1], [-1, 1], 2, "outside"),
        ([0.0, 1.0], [0, 1], 2, "integers"),
        ([], [], 2, "empty"),
        ([0], [0], 0, "num_classes"),
    ],
)
def test_bad_input_is_rejected(y_true, y_pred, k, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(np.array(y_true), np.array(y_pred), k)
