"""The trainer: fit of the `tiny` model on 2 CPU replicas, TensorBoard contents read back with
TensorBoard's own event reader, kill-and-resume in a real separate process, clear errors."""

import csv
import glob
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.data.fixtures import write_dataset
from vtcaps_tf.cli import main as vtcaps
from vtcaps_tf.cli import train as train_cli
from vtcaps_tf.config.options import OptionError, from_args
from vtcaps_tf.config.train_options import TrainConfig
from vtcaps_tf.data import features
from vtcaps_tf.train import fit as training
from vtcaps_tf.train import setup

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOSS_TERMS = ("loss", "margin_loss", "reconstruction_loss", "tpn_loss", "aux_loss", "matching_loss",
              "accuracy", "tpn_accuracy")


def _read_events(directory):
    """{tag: [(step, value or image bytes)]} from every event file under `directory`."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    out = {}
    for path in sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*"))):
        for event in EventFileLoader(path).Load():
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                arr = tensor_util.make_ndarray(value.tensor)
                item = arr.reshape(-1)[2:] if plugin == "images" else float(arr)
                out.setdefault(value.tag, []).append((event.step, plugin, item))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two epochs of the tiny model on 2 replicas through the TFX-shaped run_fn."""
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.fail("tests/conftest.py should have made 2 logical CPU devices")
    root = tmp_path_factory.mktemp("train")
    data = write_dataset(str(root / "data"), counts={"train": 16, "val": 6}, num_classes=3)
    fn_args = training.FnArgs(
        train_files=[os.path.join(data, "train-*.tfrecord.gz")],
        eval_files=[os.path.join(data, "val-*.tfrecord.gz")],
        model_run_dir=str(root / "run"),
        serving_model_dir=str(root / "serving"),
        custom_config={"preset": "tiny", "epochs": 2, "batch_size": 4, "cpu_replicas": 2,
                       "learning_rate": 1e-3, "augment": {"crop_scale": 1.0, "flip": False,
                                                          "brightness": 0.0, "contrast": 0.0,
                                                          "temporal_jitter": 0},
                       "verbose": 0},
    )
    result = training.run_fn(fn_args)
    return result, root


@pytest.mark.slow
def test_fit_two_epochs_on_two_replicas_learns(trained):
    result, root = trained
    assert result.replicas == 2
    hist = result.history
    for term in LOSS_TERMS:
        assert len(hist[term]) == 2 and np.all(np.isfinite(hist[term])), term
    # The classifier learns in 8 steps; the total can still rise while the teacher's terms settle.
    assert hist["margin_loss"][1] < hist["margin_loss"][0]
    assert hist["accuracy"][1] > hist["accuracy"][0]
    assert hist["optimizer_step"] == [4, 8]  # 16 clips / batch 4 per epoch
    assert os.path.isfile(root / "run" / "model.keras")
    assert os.path.isfile(root / "serving" / "saved_model.pb")  # run_fn's export step
    with open(root / "run" / "logs" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1]


@pytest.mark.slow
def test_tensorboard_event_files_hold_scalars_and_the_confusion_matrix(trained):
    _, root = trained
    logs = root / "run" / "logs"
    train_tags = _read_events(logs / "train")
    val_tags = _read_events(logs / "validation")
    for term in LOSS_TERMS:
        assert f"epoch_{term}" in train_tags, term
        assert f"epoch_{term}" in val_tags, term
    lr = train_tags["epoch_learning_rate"]
    assert [s for s, _, _ in lr] == [0, 1] and lr[0][2] == pytest.approx(1e-3)
    for k in range(3):
        assert [s for s, _, _ in val_tags[f"f1/class_{k}"]] == [0, 1]
        assert all(0.0 <= v <= 1.0 for _, _, v in val_tags[f"f1/class_{k}"])
    assert "macro_f1" in val_tags and "uar" in val_tags
    images = val_tags["confusion_matrix"]
    assert [s for s, _, _ in images] == [0, 1] and images[0][1] == "images"
    png = images[0][2][0]
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # The adaptive flow's fusion nodes: raw weights (start at 1) and normalised coefficients.
    fusion = {t: v for t, v in train_tags.items() if t.startswith("fusion/")}
    assert any(t.endswith("/w0") for t in fusion) and any(t.endswith("/coef1") for t in fusion)
    for tag, values in fusion.items():
        if "/coef" in tag:
            assert all(0.0 <= v <= 1.0 for _, _, v in values)


TRAIN_ARGS = ["--preset", "tiny", "--epochs", "2", "--batch-size", "4", "--steps-per-epoch", "3",
              "--cpu-replicas", "1", "--no-augment", "--verbose", "2"]
# One replica: resuming does not depend on the replica count (the `trained` fixture covers two),
# and each process traces its steps once instead of per replica.


def finished_epochs(run_dir):
    """The epoch count stored in the run's latest checkpoint, read with TensorFlow's own reader."""
    latest = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    return None if latest is None else int(tf.train.load_variable(latest, "epoch/.ATTRIBUTES/VARIABLE_VALUE"))


@pytest.mark.slow
def test_killed_run_resumes_with_same_epochs_and_continued_optimizer_steps(tmp_path, capsys):
    data = write_dataset(str(tmp_path / "data"), counts={"train": 12, "val": 4})
    run_dir = str(tmp_path / "run")
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    argv = ["train", "--data", data, "--run-dir", run_dir, *TRAIN_ARGS]
    every_2nd = ("--validation-freq", "2")  # epoch 1 is not validated, epoch 2 is

    # First process: killed (SIGKILL, by the test's wrapper) right after epoch 1's checkpoint.
    first = subprocess.run([sys.executable, "-m", "tests.crashing_vtcaps", "--after-epoch", "1",
                            *argv, *every_2nd], cwd=REPO, capture_output=True, text=True, env=env,
                           timeout=600)
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    assert "tensorboard --logdir" in first.stdout
    assert finished_epochs(run_dir) == 1
    assert not os.path.exists(os.path.join(run_dir, "model.keras"))

    # Without --resume the run directory is refused rather than overwritten.
    assert vtcaps.main(argv) == 2
    assert "--resume" in capsys.readouterr().err

    second = subprocess.run([sys.executable, "-m", "vtcaps_tf.cli.main", *argv, "--resume", *every_2nd],
                            cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Epoch 2/2" in second.stdout and "Epoch 1/2" not in second.stdout
    assert "val_loss" in second.stdout
    assert finished_epochs(run_dir) == 2

    with open(os.path.join(run_dir, "logs", "history.csv")) as f:
        rows = list(csv.DictReader(f))
    # One row per epoch over both processes, under the first process' header although the second
    # one's first epoch has validation keys; the step count continues from 3, not from 0.
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert [int(float(r["optimizer_step"])) for r in rows] == [3, 6]
    assert rows[0]["val_loss"] == "NA" and float(rows[1]["val_loss"]) > 0
    # Every value under its own column (the header's `val_optimizer_step` has no value to log).
    assert all(None not in row.values() and None not in row for row in rows)
    assert rows[1]["val_optimizer_step"] == "NA" and float(rows[1]["val_tpn_loss"]) < 100

    import keras

    import vtcaps_tf.models  # noqa: F401  (registers the custom objects)

    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"))
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 6

    # A resume with another model is refused, naming what changed.
    assert vtcaps.main([*argv, "--resume", "--head", "softmax"]) == 2
    assert "different use_capsules" in capsys.readouterr().err


def test_two_trainings_in_one_process_each_get_their_own_collective_keys():
    # Two plain MirroredStrategy objects over the same devices share collective keys, and the
    # second fit of a model of another size fails on the first one's recorded shapes.
    import keras

    for width in (3, 5):
        strategy = training.make_strategy(2)
        assert strategy.num_replicas_in_sync == 2
        with strategy.scope():
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(width),
                                      keras.layers.Dense(2)])
            model.compile(optimizer="adam", loss="mse")
        history = model.fit(np.ones((8, 4)), np.zeros((8, 2)), batch_size=4, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])


def test_missing_data_dir_is_a_clear_error(tmp_path, capsys):
    rc = vtcaps.main(["train", "--data", str(tmp_path / "nope"), "--run-dir", str(tmp_path / "r")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_empty_data_dir_is_a_clear_error(tmp_path, capsys):
    data = write_dataset(str(tmp_path / "d"), counts={"val": 1})  # metadata, but no train shards
    rc = vtcaps.main(["train", "--data", data, "--run-dir", str(tmp_path / "r"), "--preset", "tiny"])
    assert rc == 2 and "no training clips" in capsys.readouterr().err
    rc = vtcaps.main(["train", "--data", str(tmp_path), "--run-dir", str(tmp_path / "r")])
    assert rc == 2 and "metadata.json" in capsys.readouterr().err


def test_other_schema_version_is_a_clear_error(tmp_path, capsys):
    data = write_dataset(str(tmp_path / "d"), counts={"train": 1},
                         schema_version=features.SCHEMA_VERSION + 1)
    rc = vtcaps.main(["train", "--data", data, "--run-dir", str(tmp_path / "r"), "--preset", "tiny"])
    assert rc == 2 and "schema version" in capsys.readouterr().err


def test_bad_config_values_are_refused(tmp_path, capsys):
    with pytest.raises(OptionError, match="train.preset: 'huge' is not one of"):
        TrainConfig(data_dir="d", run_dir="r", preset="huge")
    with pytest.raises(OptionError, match="train.epochs: must be at least 1, got 0"):
        TrainConfig(data_dir="d", run_dir="r", epochs=0)
    with pytest.raises(OptionError, match="train.learning_rate: must be > 0"):
        TrainConfig(data_dir="d", run_dir="r", learning_rate=0.0)
    assert vtcaps.main(["train", "--data", "d", "--run-dir", "r", "--batch-size", "0"]) == 2
    assert "--batch-size: must be at least 1, got 0" in capsys.readouterr().err


def _config(*flags):
    return from_args(TrainConfig, train_cli.build_parser().parse_args(
        ["--data", "d", "--run-dir", "r", "--preset", "tiny", *flags]))


ABLATION_FLAGS = ["--no-au-attention", "--no-nonlocal", "--head", "softmax", "--flow", "cascade",
                  "--fusion", "softmax", "--tpn-levels", "2,3,4", "--matching-weight", "0.25",
                  "--tpn-pool", "mean", "--tpn-frame-stride", "2"]


def test_ablation_flags_default_to_the_preset():
    config = _config()
    assert config.model_settings() == {} and config.flow is None and config.fusion is None
    assert config.use_tpn is True
    help_text = train_cli.build_parser().format_help()
    # The defaults shown are ModelConfig's own, not spelled out again.
    from vtcaps_tf.config.presets import ModelConfig
    d = ModelConfig(name="x", clip_frames=8, long_frames=16, image_size=32, depth=18, width=0.125,
                    stem_strides=(1, 1), stage_strides=((1, 1), (1, 1), (2, 2), (2, 2)))
    assert f"(default {d.flow})" in help_text and f"(default {d.matching_weight})" in help_text


def test_ablation_flags_reach_the_built_model():
    config = _config(*ABLATION_FLAGS)
    model = setup.compiled_model(config, {"classes": ["a", "b", "c"]}, steps_per_epoch=1)
    c = model.config
    assert (c.use_au_attention, c.use_nonlocal, c.use_capsules) == (False, False, False)
    assert (c.flow, c.fusion, c.tpn_levels, c.matching_weight) == ("cascade", "softmax", (2, 3, 4), 0.25)
    assert c.use_tpn and c.num_classes == 3 and model.pyramid.num_levels == 3
    assert c.tpn_pool == "mean" and model.pyramid.pool == "mean"
    assert c.tpn_frame_stride == 2 and model.tpn_backbone.inputs[0].shape[1] == c.long_frames // 2
    assert not hasattr(model, "digit_caps")
    model = setup.compiled_model(_config("--no-tpn", "--au-attention", "--head", "capsules"),
                                 {"classes": ["a", "b"]}, steps_per_epoch=1)
    assert (model.config.use_tpn, model.config.use_au_attention, model.config.use_capsules) == \
        (False, True, True)
    assert model.name == "capsnet3d" and not hasattr(model, "pyramid")


def test_bad_ablation_flags_are_rejected(capsys):
    for bad in (["--flow", "sideways"], ["--tpn-levels", "two"], ["--head", "mlp"],
                ["--tpn-pool", "median"]):
        with pytest.raises(SystemExit):
            train_cli.build_parser().parse_args(["--data", "d", "--run-dir", "r"] + bad)
    # A value the flag's type accepts but the preset's model does not: refused before TensorFlow.
    with pytest.raises(OptionError, match="tpn_frame_stride must be >= 1 and divide long_frames"):
        _config("--tpn-frame-stride", "3")  # tiny's long window has 16 frames
    with pytest.raises(OptionError, match="tpn_levels must name backbone stages 1..4"):
        _config("--tpn-levels", "2,5")


def test_train_config_is_never_seen_half_written(tmp_path):
    """Workers of one run read RUN_DIR/train_config.json while the chief writes it."""
    import threading

    config = TrainConfig(data_dir=str(tmp_path), run_dir=str(tmp_path))
    setup.write_train_config(config, str(tmp_path))
    path = tmp_path / "train_config.json"
    stop, seen, errors = threading.Event(), [], []

    def read():
        while not stop.is_set():
            try:
                seen.append(json.loads(path.read_text())["run_dir"])
            except (ValueError, OSError) as err:
                errors.append(err)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(300):
            setup.write_train_config(config, str(tmp_path))
    finally:
        stop.set()
        reader.join()
    assert not errors, errors[:3]
    assert seen and set(seen) == {str(tmp_path)}
    assert sorted(os.listdir(tmp_path)) == ["train_config.json"]


def test_cosine_schedule_decays_over_the_whole_run(tmp_path):
    config = TrainConfig(data_dir=str(tmp_path), run_dir=str(tmp_path), epochs=4,
                         learning_rate=0.004, lr_schedule="cosine")
    schedule = setup.learning_rate(config, steps_per_epoch=25)  # 100 steps in all
    # Hand-worked: lr * (1 + cos(pi * step / 100)) / 2.
    for step, expected in [(0, 0.004), (50, 0.002), (25, 0.004 * (1 + np.cos(np.pi / 4)) / 2), (100, 0.0)]:
        np.testing.assert_allclose(float(schedule(step)), expected, atol=1e-9)
    constant = TrainConfig(data_dir=str(tmp_path), run_dir=str(tmp_path), learning_rate=0.004)
    assert setup.learning_rate(constant, steps_per_epoch=25) == 0.004


def test_lr_schedule_flag_and_bad_values(tmp_path, capsys):
    assert _config("--lr-schedule", "cosine").lr_schedule == "cosine"
    with pytest.raises(OptionError, match="train.lr_schedule: 'step' is not one of constant, cosine"):
        TrainConfig(data_dir=str(tmp_path), run_dir=str(tmp_path), lr_schedule="step")


def test_one_cpu_device_trains_under_the_default_strategy():
    strategy = training.make_strategy(0)
    assert strategy is tf.distribute.get_strategy() and strategy.num_replicas_in_sync == 1


def test_checkpoints_every_n_epochs_and_after_the_last_and_restore_everything(tmp_path):
    """EpochCheckpoint(every=2) over 5 epochs saves after epochs 2, 4 and 5 (the finished-epoch
    count a resume reads), so a resume repeats at most one epoch; a new model restores the
    weights, the batch-norm statistics, the optimizer's slots and its step count."""
    import keras

    from vtcaps_tf.train.callbacks import EpochCheckpoint

    def make_model():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2),
                                  keras.layers.BatchNormalization(), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
        model.optimizer.build(model.trainable_variables)
        return model

    model = make_model()
    ckpt_dir = str(tmp_path / "ckpt")
    checkpoint = setup.RunCheckpoint(model, ckpt_dir)
    assert checkpoint.restore() == 0  # nothing to restore yet
    saved = []  # (epoch number stored in the latest checkpoint, the optimizer's steps it holds)

    class Spy(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            latest = tf.train.latest_checkpoint(ckpt_dir)
            if latest is not None:
                entry = tuple(int(tf.train.load_variable(latest, f"{name}/.ATTRIBUTES/VARIABLE_VALUE"))
                              for name in ("epoch", "optimizer/_iterations"))
                if not saved or saved[-1] != entry:
                    saved.append(entry)

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 3)).astype("float32"), rng.normal(size=(8, 1)).astype("float32")
    model.fit(x, y, batch_size=4, epochs=5, verbose=0,
              callbacks=[EpochCheckpoint(checkpoint, every=2, epochs=5), Spy()])
    assert saved == [(2, 4), (4, 8), (5, 10)]  # 2 steps per epoch
    assert sorted(p for p in os.listdir(ckpt_dir) if p.endswith(".index")) == [
        "ckpt-4.index", "ckpt-5.index"]  # two kept

    other = make_model()
    assert setup.RunCheckpoint(other, str(tmp_path / "elsewhere"), restore_from=ckpt_dir).restore() == 5
    assert int(other.optimizer.iterations.numpy()) == 10
    for a, b in zip(model.weights + model.optimizer.variables, other.weights + other.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    assert float(np.abs(np.asarray(model.layers[1].moving_mean)).sum()) > 0  # the statistics moved
    with pytest.raises(ValueError, match="every"):
        EpochCheckpoint(checkpoint, every=0)


def test_model_overrides_must_name_model_config_fields_and_agree_with_the_switches():
    config = TrainConfig(data_dir="d", run_dir="r", preset="tiny", model_overrides={"tpn_dropout": 0.25})
    model = setup.compiled_model(config, {"classes": ["a", "b"]}, steps_per_epoch=1)
    assert model.config.tpn_dropout == 0.25
    with pytest.raises(OptionError, match=r"unknown ModelConfig fields \['tpn_stride'\]"):
        TrainConfig(data_dir="d", run_dir="r", model_overrides={"tpn_stride": 2})
    with pytest.raises(OptionError, match="flow='cascade' disagrees with the switch"):
        TrainConfig(data_dir="d", run_dir="r", flow="parallel", model_overrides={"flow": "cascade"})
    # The same setting both ways is one model: `head` and use_capsules.
    assert TrainConfig(data_dir="d", run_dir="r", head="softmax",
                       model_overrides={"use_capsules": False}).model_settings() == {"use_capsules": False}


@pytest.mark.parametrize("flag", ["--checkpoint-every", "--validation-freq"])
def test_every_n_epochs_flags_reach_the_config_and_bad_values_are_refused(flag, tmp_path, capsys):
    field = flag[2:].replace("-", "_")
    assert getattr(_config(flag, "5"), field) == 5
    assert getattr(_config(), field) == 1
    assert vtcaps.main(["train", "--data", str(tmp_path), "--run-dir", str(tmp_path / "r"), flag, "0"]) == 2
    assert f"{flag}: must be at least 1, got 0" in capsys.readouterr().err
