"""Export of the `tiny` model: versions, atomic write, both signatures loaded with
tf.saved_model.load and compared with the in-memory model (the default export serves 3D-CapsNet
only; --with-teacher adds TPN-ERM), saved_model_cli listing."""

import errno
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.crashing_writes import full_disk
from tests.data.fixtures import synthetic_clip
from tests.models.helpers import random_inputs
from vtcaps_tf.cli.main import main as vtcaps
from vtcaps_tf.errors import InputNotFoundError, UsageError
from vtcaps_tf.export import saved_model as export
from vtcaps_tf.export.model_card import read_model_card
from vtcaps_tf.export.versions import version_dirs
from vtcaps_tf.utils import atomic_files

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CLASSES = ["anger", "happy", "sad"]


@pytest.fixture(scope="module")
def model(tiny_export):
    assert tiny_export.classes == CLASSES
    return tiny_export.model


@pytest.fixture(scope="module")
def exported(tiny_export):
    return tiny_export.base, tiny_export.path


def _examples(cfg, count=3):
    rng = np.random.default_rng(1)
    clips = [synthetic_clip(k, 3, cfg.long_frames, cfg.clip_frames, cfg.image_size, rng) for k in range(count)]
    return [c.to_example().SerializeToString() for c in clips]


def _stored_values(path):
    """Number of values in the export's variables checkpoint."""
    reader = tf.train.load_checkpoint(os.path.join(path, "variables", "variables"))
    return sum(int(np.prod(shape)) for name, shape in reader.get_variable_to_shape_map().items()
               if name != "_CHECKPOINTABLE_OBJECT_GRAPH")


def _weight_values(model, leave_out):
    """Values of the model's weights, less those of the named sub-layers."""
    left_out = {id(w) for name in leave_out for w in getattr(model, name).weights}
    return sum(int(np.prod(w.shape)) for w in model.weights if id(w) not in left_out)


@pytest.mark.slow
def test_both_signatures_match_the_in_memory_model(model, exported):
    _, path = exported
    loaded = tf.saved_model.load(path)
    assert set(loaded.signatures) == {"serving_default", "serve_examples"}
    cfg = model.config

    # The default export serves what predicts: no long_frames input, no TPN output.
    inputs = random_inputs(cfg, 2, with_teacher=False)
    sig = loaded.signatures["serving_default"]
    assert set(sig.structured_input_signature[1]) == {"frames", "landmarks"}
    want = model(random_inputs(cfg, 2), training=False)  # the full model (TPN-ERM run too)
    got = sig(**{k: tf.constant(v) for k, v in inputs.items()})
    assert set(got) == {"probabilities", "capsule_lengths", "classes"}
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=1e-5)
    np.testing.assert_allclose(got["capsule_lengths"], want["capsule_lengths"], atol=1e-5)
    assert got["classes"].numpy().tolist() == [[c.encode() for c in CLASSES]] * 2

    # serve_examples: serialized SequenceExamples (schema 2) as the Beam job writes them, decoded
    # by the model's input contract exactly as training reads them.
    serialized = _examples(cfg)
    decoded = [model.contract.parse_example(tf.constant(s))[0] for s in serialized]
    batch = {k: tf.stack([d[k] for d in decoded]) for k in decoded[0]}
    want = model(batch, training=False)
    got = loaded.signatures["serve_examples"](examples=tf.constant(serialized))
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=1e-5)
    assert "tpn_probabilities" not in got and got["classes"].shape == (3, 3)
    # It stores the weights it serves: not the teacher's, nor the reconstruction decoder's.
    teacher = ("tpn_backbone", "pyramid", "motion_units")
    assert _stored_values(path) == _weight_values(model, teacher + ("decoder",))
    assert _stored_values(path) < _weight_values(model, ())


@pytest.mark.slow
def test_with_teacher_export_adds_long_frames_and_tpn_probabilities(model, tmp_path):
    path = export.export_model(model, str(tmp_path / "teacher"), with_teacher=True)
    loaded = tf.saved_model.load(path)
    # The teacher's weights are stored with it (and the motion units its graph computes beside
    # them); the reconstruction decoder's are not.
    assert _stored_values(path) == _weight_values(model, ("decoder",))
    cfg = model.config
    inputs = random_inputs(cfg, 2, seed=3)
    sig = loaded.signatures["serving_default"]
    assert set(sig.structured_input_signature[1]) == {"frames", "landmarks", "long_frames"}
    want = model(inputs, training=False)
    got = sig(**{k: tf.constant(v) for k, v in inputs.items()})
    for key in ("probabilities", "capsule_lengths", "tpn_probabilities"):
        np.testing.assert_allclose(got[key], want[key], atol=1e-5)
    serialized = _examples(cfg, 2)
    decoded = [model.contract.parse_example(tf.constant(s))[0] for s in serialized]
    want = model({k: tf.stack([d[k] for d in decoded]) for k in decoded[0]}, training=False)
    got = loaded.signatures["serve_examples"](examples=tf.constant(serialized))
    np.testing.assert_allclose(got["tpn_probabilities"], want["tpn_probabilities"], atol=1e-5)


@pytest.mark.slow
def test_saved_model_cli_lists_both_signatures(exported):
    _, path = exported
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    out = subprocess.run([cli, "show", "--dir", path, "--all"], capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert "signature_def['serving_default']" in text and "signature_def['serve_examples']" in text
    for name in ("frames", "landmarks", "examples", "probabilities", "capsule_lengths", "classes"):
        assert f"['{name}']" in text, name
    assert "['long_frames']" not in text and "['tpn_probabilities']" not in text


@pytest.mark.slow
def test_versions_are_integers_never_overwritten_and_appear_whole(model, exported, tmp_path,
                                                                  monkeypatch):
    assert os.path.basename(exported[1]) == "1"
    base = str(tmp_path / "fer")  # a copy: the shared export stays as other tests read it
    shutil.copytree(exported[1], os.path.join(base, "1"))
    with pytest.raises(FileExistsError) as caught:
        export.export_model(model, base, version=1)
    assert isinstance(caught.value, UsageError)  # the version asked for is taken: bad input

    # While the SavedModel is being written, no integer version directory exists yet.
    seen = []
    real_save = tf.saved_model.save

    def spying_save(obj, path, **kw):
        real_save(obj, path, **kw)
        seen.append(sorted(os.listdir(base)))

    monkeypatch.setattr(tf.saved_model, "save", spying_save)
    second = export.export_model(model, base)
    assert os.path.basename(second) == "2"
    assert seen and "2" not in seen[0] and any(atomic_files.is_temporary(n) for n in seen[0])
    assert sorted(os.listdir(base)) == ["1", "2"]  # the temporary directory is gone
    assert os.path.isfile(os.path.join(second, "saved_model.pb"))
    assert export.existing_versions(base) == [1, 2]


@pytest.mark.slow
def test_export_cli(model, tmp_path, capsys):
    model_path = str(tmp_path / "model.keras")
    model.save(model_path)
    base = str(tmp_path / "models" / "fer")
    assert vtcaps(["export", "--model", model_path, "--base-path", base, "--version", "7"]) == 0
    assert capsys.readouterr().out.strip() == os.path.join(os.path.abspath(base), "7")
    # The version asked for exists: bad usage, refused before anything is written.
    assert vtcaps(["export", "--model", model_path, "--base-path", base, "--version", "7"]) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert vtcaps(["export", "--model", model_path, "--base-path", base, "--with-teacher"]) == 0
    path = capsys.readouterr().out.strip()
    assert path.endswith("8")
    sig = tf.saved_model.load(path).signatures["serving_default"]
    assert "tpn_probabilities" in sig.structured_outputs


@pytest.mark.slow
def test_export_cli_tflite(model, tmp_path, capsys):
    from vtcaps_tf.export.model_card import read_model_card
    from vtcaps_tf.export.tflite_runtime import INFO_FILE, TFLITE_FILE, TFLiteModel

    model_path = str(tmp_path / "model.keras")
    model.save(model_path)
    base = str(tmp_path / "fer")
    assert vtcaps(["export", "--model", model_path, "--base-path", base, "--tflite", "fp32"]) == 0
    path = capsys.readouterr().out.strip()
    files = set(os.listdir(path))
    assert {"saved_model.pb", TFLITE_FILE, INFO_FILE} <= files
    tflite_model = TFLiteModel(path)
    assert tflite_model.mode == "fp32"
    assert tflite_model.class_names == read_model_card(path)["classes"] == CLASSES
    inputs = random_inputs(model.config, 2, 4, with_teacher=False)
    got = tflite_model(**inputs)
    signature = tf.saved_model.load(path).signatures["serving_default"]
    want = signature(**{k: tf.constant(v) for k, v in inputs.items()})
    np.testing.assert_allclose(got["probabilities"], want["probabilities"].numpy(), atol=1e-5, rtol=0)
    assert got["classes"].tolist() == want["classes"].numpy().tolist()


def test_export_cli_tflite_usage_errors(tmp_path, capsys):
    # Refused before the model loads: the model file named here does not exist.
    missing = str(tmp_path / "none.keras")
    base = ["export", "--model", missing, "--base-path", str(tmp_path / "fer")]
    for extra, message in [(["--tflite", "int8"], "needs calibration data"),
                           (["--tflite", "fp32", "--with-teacher"], "without the teacher"),
                           (["--calibration-data", str(tmp_path)], "int8 mode"),
                           (["--tflite", "dynamic", "--calibration-clips", "5"], "not dynamic"),
                           (["--tflite", "int8", "--calibration-data", str(tmp_path), "--calibration-clips", "0"],
                            "at least 1")]:
        assert vtcaps([*base, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("vtcaps export: error: ") and message in err and err.count("\n") == 1, err
    assert not os.path.exists(tmp_path / "fer")


def test_export_cli_missing_model(tmp_path, capsys):
    missing = str(tmp_path / "none.keras")
    assert vtcaps(["export", "--model", missing, "--base-path", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"vtcaps export: error: no model file {missing!r}\n"
    text = tmp_path / "notes.keras"
    text.write_text("not a model")
    assert vtcaps(["export", "--model", str(text), "--base-path", str(tmp_path)]) == 2
    assert "cannot load" in capsys.readouterr().err
    # The library's own errors: bad input, and for a missing file still a FileNotFoundError.
    with pytest.raises(InputNotFoundError) as caught:
        export.export_trained(missing, str(tmp_path / "served"))
    assert isinstance(caught.value, FileNotFoundError)
    with pytest.raises(UsageError, match="cannot load"):
        export.export_trained(str(text), str(tmp_path / "served"))
    assert not os.path.exists(tmp_path / "served")  # nothing written for a model that is not there


def _stored_variables(version_dir):
    loaded = tf.saved_model.load(version_dir)
    return sorted((v.name, v.numpy().tobytes()) for v in loaded.serving_variables)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["mid-write", "before-rename"])
def test_an_export_killed_is_never_a_version_and_a_rerun_completes(point, tiny_export, tmp_path):
    """SIGKILL while the version is written (tests/crashing_writes.py): no version for `serve`,
    and the rerun writes version 1 as an export never interrupted."""
    base = str(tmp_path / "fer")
    run = subprocess.run([sys.executable, "-m", "tests.crashing_writes", point, "export", base],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    assert version_dirs(base, ready=False) == {} and version_dirs(base) == {}
    assert export.export_model(tiny_export.model, base) == os.path.join(base, "1")
    assert _stored_variables(os.path.join(base, "1")) == _stored_variables(tiny_export.path)
    card, uninterrupted = read_model_card(os.path.join(base, "1")), read_model_card(tiny_export.path)
    assert {k: v for k, v in card.items() if k != "created"} == \
        {k: v for k, v in uninterrupted.items() if k != "created"}


@pytest.mark.slow
def test_an_export_out_of_disk_is_never_a_version(tiny_export, tmp_path, monkeypatch):
    base = str(tmp_path / "fer")
    with full_disk(monkeypatch), pytest.raises(OSError) as caught:
        export.export_model(tiny_export.model, base)
    assert caught.value.errno == errno.ENOSPC
    assert os.listdir(base) == []  # neither a version nor its staging folder
