"""Evaluation reports: the numbers come from hand-worked predictions; the files are read back."""

import json
import os

import numpy as np
import pytest

from vtcaps_tf import evaluate

CLASSES = ["anger", "happy", "sad"]
# Same ten samples as tests/test_metrics.py: cm = [[3,1,0],[1,1,0],[1,0,3]].
LABELS = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 0])
PRED = np.array([0, 0, 1, 1, 0, 2, 2, 0, 2, 0])


def _probs(pred, k=3):
    p = np.full((len(pred), k), 0.1, np.float32)
    p[np.arange(len(pred)), pred] = 0.8
    return p


def test_build_report_from_probabilities():
    tpn_pred = LABELS.copy()
    tpn_pred[:3] = 2  # the TPN head gets 7 of 10 right
    rep = evaluate.build_report(LABELS, _probs(PRED), CLASSES, _probs(tpn_pred))
    assert rep["confusion_matrix"] == [[3, 1, 0], [1, 1, 0], [1, 0, 3]]
    assert rep["accuracy"] == pytest.approx(0.7)
    assert rep["uar"] == pytest.approx(2 / 3)
    assert rep["tpn_accuracy"] == pytest.approx(0.7)
    assert rep["per_class"]["sad"]["precision"] == pytest.approx(1.0)


def test_write_report_files(tmp_path):
    rep = evaluate.build_report(LABELS, _probs(PRED), CLASSES)
    paths = evaluate.write_report(rep, str(tmp_path / "out"), title="test")
    assert set(os.path.basename(p) for p in paths.values()) == {
        "report.json", "report.md", "confusion_matrix.png"}
    with open(paths["report.json"]) as f:
        assert json.load(f)["macro_f1"] == pytest.approx(85 / 126)
    md = open(paths["report.md"]).read()
    # Table 5 layout: one row per expression, P / R / F1 in percent.
    assert "| expression | P (%) | R (%) | F1 (%) | support |" in md
    assert "| anger | 60.00 | 75.00 | 66.67 | 4 |" in md
    assert "| sad | 100.00 | 75.00 | 85.71 | 4 |" in md
    assert "| accuracy (WAR) | 70.00 |" in md
    assert "| anger | 3 | 1 | 0 |" in md
    with open(paths["confusion_matrix.png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
