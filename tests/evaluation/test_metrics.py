"""Metrics against a confusion matrix and ratios worked out by hand."""

import numpy as np
import pytest

from vtcaps_tf.evaluation import metrics

# Ten samples, three classes. Worked by hand:
#   true 0 -> predicted 0,0,1,0   true 1 -> 1,0   true 2 -> 2,2,0,2
#   cm = [[3,1,0],[1,1,0],[1,0,3]]; column sums 5,2,3; row sums 4,2,4
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 2, 0]
Y_PRED = [0, 0, 1, 1, 0, 2, 2, 0, 2, 0]
CM = [[3, 1, 0], [1, 1, 0], [1, 0, 3]]
PRECISION = [3 / 5, 1 / 2, 3 / 3]
RECALL = [3 / 4, 1 / 2, 3 / 4]
F1 = [2 / 3, 1 / 2, 6 / 7]  # 2PR/(P+R): 0.9/1.35, 0.5, 1.5/1.75


def test_confusion_matrix_rows_true_columns_predicted():
    np.testing.assert_array_equal(metrics.confusion_matrix(Y_TRUE, Y_PRED, 3), CM)


def test_precision_recall_f1_standard_definitions():
    p, r, f, s = metrics.precision_recall_f1(np.array(CM))
    np.testing.assert_allclose(p, PRECISION)
    np.testing.assert_allclose(r, RECALL)  # TP/(TP+FN), not the paper's misprinted TP/(TP+TN)
    np.testing.assert_allclose(f, F1)
    np.testing.assert_array_equal(s, [4, 2, 4])


def test_report_aggregates():
    rep = metrics.classification_report(Y_TRUE, Y_PRED, ["anger", "happy", "sad"])
    assert rep["num_samples"] == 10
    assert rep["accuracy"] == pytest.approx(0.7)
    assert rep["war"] == pytest.approx(0.7)
    assert rep["uar"] == pytest.approx(2 / 3)
    assert rep["macro_f1"] == pytest.approx(85 / 126)
    assert rep["weighted_f1"] == pytest.approx(149 / 210)
    assert rep["per_class"]["anger"] == pytest.approx(
        {"precision": 0.6, "recall": 0.75, "f1": 2 / 3, "support": 4})
    assert rep["confusion_matrix"] == CM


def test_absent_class_counts_zero_and_is_left_out_of_every_macro_average():
    # Class 3 neither occurs nor is predicted: its ratios are 0/0 -> 0, and no average counts it.
    rep = metrics.classification_report(Y_TRUE, Y_PRED, ["a", "b", "c", "d"])
    assert rep["per_class"]["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert rep["absent_classes"] == ["d"]
    assert rep["uar"] == pytest.approx(2 / 3)
    assert rep["macro_recall"] == pytest.approx(2 / 3)
    assert rep["macro_precision"] == pytest.approx((3 / 5 + 1 / 2 + 1) / 3)
    assert rep["macro_f1"] == pytest.approx(85 / 126)  # the three-class figure: (2/3 + 1/2 + 6/7) / 3


# A CK+ fold without contempt, where one sad clip is taken for contempt. Worked by hand:
#   true 0 -> 0,0,1,0   true 1 -> 1,0   true 2 -> 2,2,3,2   (no true 3)
#   cm = [[3,1,0,0],[1,1,0,0],[0,0,3,1],[0,0,0,0]]; column sums 4,2,3,1; row sums 4,2,4,0
#   precision 3/4, 1/2, 1, 0; recall 3/4, 1/2, 3/4, (0/0 -> 0); f1 3/4, 1/2, 6/7, 0
#   over the present classes 0-2: macro P 3/4, macro R = UAR 2/3, macro F1 (3/4 + 1/2 + 6/7) / 3
#   = 59/84 (over all four it would be 59/112); weighted F1 (4*3/4 + 2*1/2 + 4*6/7) / 10 = 26/35.
FOLD_PRED = [0, 0, 1, 1, 0, 2, 2, 3, 2, 0]
CKPLUS = ["anger", "happy", "sad", "contempt"]


def test_a_class_missing_from_the_test_labels_is_listed_and_kept_in_the_confusion_matrix():
    rep = metrics.classification_report(Y_TRUE, FOLD_PRED, CKPLUS)
    assert rep["confusion_matrix"] == [[3, 1, 0, 0], [1, 1, 0, 0], [0, 0, 3, 1], [0, 0, 0, 0]]
    assert rep["absent_classes"] == ["contempt"]
    assert rep["accuracy"] == pytest.approx(0.7)
    assert rep["macro_precision"] == pytest.approx(3 / 4)
    assert rep["macro_recall"] == pytest.approx(2 / 3)
    assert rep["uar"] == pytest.approx(2 / 3)
    assert rep["macro_f1"] == pytest.approx(59 / 84)
    assert rep["weighted_f1"] == pytest.approx(26 / 35)
    assert rep["per_class"]["contempt"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def _macro_over_present(y_true, y_pred):
    """(macro P, macro R, macro F1) over the labels present in y_true, counted sample by sample
    as scikit-learn's precision_recall_fscore_support(labels=present, average="macro",
    zero_division=0) does."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    ps, rs, fs = [], [], []
    for c in np.unique(y_true):
        tp = np.sum((y_true == c) & (y_pred == c))
        p = tp / np.sum(y_pred == c) if np.any(y_pred == c) else 0.0
        r = tp / np.sum(y_true == c)
        ps.append(p)
        rs.append(r)
        fs.append(2 * p * r / (p + r) if p + r else 0.0)
    return np.mean(ps), np.mean(rs), np.mean(fs)


@pytest.mark.parametrize("seed", range(5))
def test_macro_figures_and_uar_match_a_sample_by_sample_recount(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.choice([0, 1, 3, 4], size=60)  # class 2 of 6 absent, class 5 too
    y_pred = np.where(rng.random(60) < 0.6, y_true, rng.integers(0, 6, size=60))
    rep = metrics.classification_report(y_true, y_pred, list("abcdef"))
    p, r, f = _macro_over_present(y_true, y_pred)
    assert rep["macro_precision"] == pytest.approx(p)
    assert rep["macro_recall"] == pytest.approx(r) and rep["uar"] == pytest.approx(r)
    assert rep["macro_f1"] == pytest.approx(f)
    assert rep["absent_classes"] == ["c", "f"]
    assert np.sum(rep["confusion_matrix"]) == 60


def test_perfect_and_all_wrong():
    assert metrics.classification_report([0, 1, 2], [0, 1, 2], "abc")["macro_f1"] == 1.0
    rep = metrics.classification_report([0, 1], [1, 0], "ab")
    assert rep["accuracy"] == 0.0 and rep["macro_f1"] == 0.0


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="length"):
        metrics.confusion_matrix([0, 1], [0], 2)
    with pytest.raises(ValueError, match="outside"):
        metrics.confusion_matrix([0, 3], [0, 1], 2)
