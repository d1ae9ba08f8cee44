"""The model card in every export: what it records from the training run, that TF Serving's loader
still reads the SavedModel, and what `vtcaps predict` says about a model trained on synthetic faces."""

import json
import os

import pytest

from vtcaps_tf.export import saved_model as export
from vtcaps_tf.export.model_card import CARD_FILE, build_model_card, describe, read_model_card

CLASSES = ["anger", "happy", "sad"]


@pytest.fixture(scope="module")
def model():
    """What the card reads of a model: its preset config and class names (no weights needed)."""
    from types import SimpleNamespace

    from vtcaps_tf.config.presets import get_preset

    return SimpleNamespace(config=get_preset("tiny", num_classes=3), class_names=CLASSES)


@pytest.fixture(scope="module")
def card(model, tmp_path_factory):
    """The card of a model read from a made-up training run on synthetic data."""
    root = tmp_path_factory.mktemp("card")
    data, run = root / "data", root / "run"
    data.mkdir()
    (run / "eval").mkdir(parents=True)
    (data / "metadata.json").write_text(json.dumps({
        "source": "synthetic", "classes": CLASSES, "videos": {"train": 30, "val": 6, "test": 6},
        "counts": {"train": 120, "val": 24, "test": 24}}))
    (run / "train_config.json").write_text(json.dumps({"data_dir": str(data), "preset": "tiny", "epochs": 3}))
    (run / "eval" / "report.json").write_text(json.dumps({
        "split": "test", "num_samples": 24, "accuracy": 0.75, "uar": 0.7, "macro_f1": 0.68}))
    return build_model_card(model, str(run / "model.keras"))


@pytest.fixture(scope="module")
def exported(card, tmp_path_factory):
    from vtcaps_tf.models import build_model

    model = build_model("tiny", class_names=CLASSES, num_classes=3)
    return export.export_model(model, str(tmp_path_factory.mktemp("models") / "fer"), card=card)


def test_card_records_the_training_run(card):
    stored = json.loads(json.dumps(card))  # as written
    assert stored["preset"] == "tiny" and stored["classes"] == CLASSES
    assert (stored["clip_frames"], stored["long_frames"], stored["image_size"]) == (8, 16, 32)
    assert stored["training"]["source"] == "synthetic" and stored["training"]["epochs"] == 3
    assert stored["training"]["videos"] == {"train": 30, "val": 6, "test": 6}
    assert stored["synthetic_only"] is True
    assert stored["evaluation"]["accuracy"] == 0.75 and stored["evaluation"]["split"] == "test"
    line = describe(stored)
    assert "trained on synthetic (42 videos)" in line and "test accuracy 0.750" in line


@pytest.mark.slow
def test_export_writes_the_card_and_still_loads(exported, card):
    import tensorflow as tf

    assert read_model_card(exported) == json.loads(json.dumps(card))
    assert os.path.exists(os.path.join(exported, "assets", CARD_FILE))
    loaded = tf.saved_model.load(exported)
    assert set(loaded.signatures) == {"serving_default", "serve_examples"}


def test_card_without_a_run_says_so(model):
    card = build_model_card(model)
    assert card["training"] is None and card["synthetic_only"] is None and card["evaluation"] is None
    assert "training data not recorded" in describe(card)
    assert "no model card" in describe(None)


@pytest.mark.slow
def test_predict_warns_about_a_synthetic_only_model(exported, tmp_path, capsys):
    from tests.face import fixtures as fx
    from vtcaps_tf.cli.predict import main as predict_command

    video = fx.write_face_video(str(tmp_path / "v.avi"), n=8)
    rc = predict_command([video, "--saved-model", exported, "--format", "json", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 0
    warnings = [line for line in err.splitlines() if "trained only on synthetic faces" in line]
    assert len(warnings) == 1
