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


def test_absent_class_counts_zero_and_is_left_out_of_uar():
    # Class 3 neither occurs nor is predicted: its ratios are 0/0 -> 0; UAR averages present classes.
    rep = metrics.classification_report(Y_TRUE, Y_PRED, ["a", "b", "c", "d"])
    assert rep["per_class"]["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert rep["uar"] == pytest.approx(2 / 3)
    assert rep["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 6 / 7) / 4)


def test_perfect_and_all_wrong():
    assert metrics.classification_report([0, 1, 2], [0, 1, 2], "abc")["macro_f1"] == 1.0
    rep = metrics.classification_report([0, 1], [1, 0], "ab")
    assert rep["accuracy"] == 0.0 and rep["macro_f1"] == 0.0


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="length"):
        metrics.confusion_matrix([0, 1], [0], 2)
    with pytest.raises(ValueError, match="outside"):
        metrics.confusion_matrix([0, 3], [0, 1], 2)
