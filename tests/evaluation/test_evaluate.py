"""Evaluation reports: the numbers come from hand-worked predictions; the files are read back."""

import json
import os

import numpy as np
import pytest

from vtcaps_tf.cli import main as vtcaps
from vtcaps_tf.evaluation import evaluate

CLASSES = ["anger", "happy", "sad"]
# Same ten samples as tests/evaluation/test_metrics.py: cm = [[3,1,0],[1,1,0],[1,0,3]].
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


@pytest.mark.slow
def test_evaluate_cli_on_the_tiny_model(tmp_path, capsys):
    import keras
    import tensorflow as tf

    from tests.data.fixtures import write_dataset
    from vtcaps_tf.data import dataset
    from vtcaps_tf.models import build_model

    data = write_dataset(str(tmp_path / "data"), counts={"test": 5}, num_classes=3)
    model = build_model("tiny", class_names=["class_0", "class_1", "class_2"], num_classes=3)
    model_path = str(tmp_path / "model.keras")
    model.save(model_path)
    out_dir = str(tmp_path / "eval")
    assert vtcaps.main(["evaluate", "--model", model_path, "--data", data, "--output", out_dir,
                        "--batch-size", "2"]) == 0
    with open(os.path.join(out_dir, "report.json")) as f:
        rep = json.load(f)
    # Re-computed here, clip by clip, with the reloaded model.
    reloaded = keras.saving.load_model(model_path, compile=False)
    labels, preds = [], []
    for x, y in dataset.read_split(data, "test", reloaded.contract):
        probs = reloaded({k: tf.expand_dims(v, 0) for k, v in x.items()}, training=False)["probabilities"]
        preds.append(int(np.argmax(probs[0])))
        labels.append(int(y))
    assert labels == [0, 1, 2, 0, 1]
    assert rep["num_samples"] == 5 and rep["split"] == "test"
    assert rep["accuracy"] == pytest.approx(np.mean(np.array(preds) == np.array(labels)))
    cm = np.zeros((3, 3), int)
    for t, p in zip(labels, preds):
        cm[t, p] += 1
    assert rep["confusion_matrix"] == cm.tolist()
    assert "tpn_accuracy" in rep
    # One clip per video in this data: the video-level figures are the clip-level ones.
    assert rep["num_videos"] == 5 and rep["video"]["confusion_matrix"] == cm.tolist()
    assert os.path.isfile(os.path.join(out_dir, "confusion_matrix.png"))
    assert "accuracy" in capsys.readouterr().out


def test_evaluate_cli_errors(tmp_path, capsys):
    assert vtcaps.main(["evaluate", "--model", str(tmp_path / "x.keras"), "--data", str(tmp_path),
                        "--output", str(tmp_path / "o")]) == 2
    assert "no model file" in capsys.readouterr().err


def test_video_level_report_beside_the_clip_level_one(tmp_path):
    # The ten samples above as four videos whose clips share a label: v1 = clips 0-2 (anger),
    # v2 = 3-4 (happy), v3 = 5-8 (sad), v4 = 9 (anger).
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 0])
    ids = ["v1", "v1", "v1", "v2", "v2", "v3", "v3", "v3", "v3", "v4"]
    probs = _probs(PRED)
    rep = evaluate.build_report(labels, probs, CLASSES, video_ids=ids)
    assert rep["accuracy"] == pytest.approx(0.7) and rep["level"] == "clip"
    # Mean probabilities by hand: v1 clips predict 0,0,1 -> [.567,.367,.1] -> anger, right;
    # v2 predicts 1,0 -> [.45,.45,.1] tie -> argmax 0 (anger), wrong; v3 predicts 2,2,0,2 -> sad,
    # right; v4 predicts 0 -> right. 3 of 4 videos.
    assert rep["num_videos"] == 4
    assert rep["video"]["accuracy"] == pytest.approx(0.75)
    assert rep["video"]["confusion_matrix"] == [[2, 0, 0], [1, 0, 0], [0, 0, 1]]
    paths = evaluate.write_report(rep, str(tmp_path / "out"), title="t")
    md = open(paths["report.md"]).read()
    assert "| accuracy (WAR) | 70.00 | 75.00 |" in md and "10 clips, 4 videos." in md


def test_video_level_averages_over_the_classes_its_labels_hold():
    # Four classes, the fourth (contempt) in no label; video v3's clips are taken for contempt.
    classes = CLASSES + ["contempt"]
    labels = np.array([0, 0, 1, 2, 2])
    ids = ["v1", "v1", "v2", "v3", "v3"]
    rep = evaluate.build_report(labels, _probs(np.array([0, 0, 1, 3, 3]), k=4), classes, video_ids=ids)
    video = rep["video"]
    # Videos: v1 anger -> anger, v2 happy -> happy, v3 sad -> contempt.
    assert video["confusion_matrix"] == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]]
    assert video["absent_classes"] == rep["absent_classes"] == ["contempt"]
    # Over anger, happy, sad: F1 1, 1, 0 -> 2/3 (a fourth class would make it 1/2); recall the same.
    assert video["macro_f1"] == pytest.approx(2 / 3) and video["uar"] == pytest.approx(2 / 3)
    assert video["macro_precision"] == pytest.approx(2 / 3)


def test_video_level_rejects_a_video_with_two_labels():
    from vtcaps_tf.evaluation import metrics

    with pytest.raises(ValueError, match="different labels"):
        metrics.video_level(["a", "a"], [0, 1], np.ones((2, 2)))
