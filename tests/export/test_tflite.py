"""TFLite export (`vtcaps_tf.export.tflite`) and its runner (`tflite_runtime.TFLiteModel`).

Fast: a toy SavedModel with the project's signature (numpy computes its outputs) goes through
the same conversion; the runner answers as the signature does, from a pool of interpreters under
concurrent calls. Slow: a `tiny` CapsNet3D trained on the synthetic fixture until its classes
are clear, exported with the TFLite hook: fp32 equals the SavedModel to 1e-5, no mode needs a
Select TF or custom op, dynamic-range and int8 models agree with it on the fixture's test clips.
"""

import os
import shutil
import threading

import numpy as np
import pytest
import tensorflow as tf

from vtcaps_tf.errors import UsageError
from vtcaps_tf.export import tflite
from vtcaps_tf.export.tflite_runtime import INFO_FILE, TFLITE_FILE, TFLiteModel, op_names

CLASSES = ["class_0", "class_1", "class_2"]


def _builtin_only(ops):
    return [op for op in ops if op.startswith("Flex") or not op.isupper()]


# The toy model --------------------------------------------------------------------------------
TOY_FRAMES, TOY_SIZE = 2, 4


def _toy_features(frames, landmarks):
    """[B, 5]: mean colour of the clip in [0, 1], mean landmark x and y."""
    return np.concatenate([frames.astype(np.float64).mean(axis=(1, 2, 3)) / 255.0,
                           landmarks.astype(np.float64).mean(axis=(1, 2))], axis=-1)


def _toy_reference(weights, frames, landmarks):
    logits = _toy_features(frames, landmarks) @ weights
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return {"probabilities": e / e.sum(-1, keepdims=True), "capsule_lengths": 1 / (1 + np.exp(-logits))}


def _toy_inputs(batch, seed):
    rng = np.random.default_rng(seed)
    return {"frames": rng.integers(0, 256, (batch, TOY_FRAMES, TOY_SIZE, TOY_SIZE, 3), dtype=np.uint8),
            "landmarks": rng.uniform(0, 1, (batch, TOY_FRAMES, 68, 2)).astype(np.float32)}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A SavedModel with the export's `serving_default` (frames, landmarks -> probabilities,
    capsule_lengths, classes) around one weight matrix, and its fp32 TFLite model."""
    weights = np.random.default_rng(0).normal(0, 3, (5, len(CLASSES))).astype(np.float32)
    module = tf.Module()
    module.w = tf.Variable(weights)

    @tf.function(input_signature=[
        tf.TensorSpec([None, TOY_FRAMES, TOY_SIZE, TOY_SIZE, 3], tf.uint8, name="frames"),
        tf.TensorSpec([None, TOY_FRAMES, 68, 2], tf.float32, name="landmarks")])
    def serve(frames, landmarks):
        colour = tf.reduce_mean(tf.cast(frames, tf.float32), axis=[1, 2, 3]) / 255.0
        logits = tf.concat([colour, tf.reduce_mean(landmarks, axis=[1, 2])], -1) @ module.w
        batch = tf.shape(logits)[0]
        return {"probabilities": tf.nn.softmax(logits), "capsule_lengths": tf.sigmoid(logits),
                "classes": tf.tile(tf.constant(CLASSES)[None], tf.stack([batch, 1]))}

    path = str(tmp_path_factory.mktemp("toy") / "1")
    tf.saved_model.save(module, path, signatures={"serving_default": serve.get_concrete_function()})
    tflite.write_tflite(path, "fp32")
    return weights, path


def test_toy_files_and_info(toy):
    _, path = toy
    assert os.path.isfile(os.path.join(path, TFLITE_FILE))
    model = TFLiteModel(path)
    assert model.class_names == CLASSES and model.mode == "fp32"
    assert model.inputs == {"frames": ((None, TOY_FRAMES, TOY_SIZE, TOY_SIZE, 3), np.uint8),
                            "landmarks": ((None, TOY_FRAMES, 68, 2), np.float32)}
    assert _builtin_only(op_names(open(os.path.join(path, TFLITE_FILE), "rb").read())) == []


@pytest.mark.parametrize("batch", [1, 4, 2])
def test_toy_answers_as_the_signature(toy, batch):
    weights, path = toy
    model = TFLiteModel(path)
    inputs = _toy_inputs(batch, seed=batch)
    got = model(**inputs)
    want = _toy_reference(weights, **inputs)
    assert set(got) == {"probabilities", "capsule_lengths", "classes"}
    for k in want:
        assert got[k].shape == (batch, len(CLASSES)) and got[k].dtype == np.float32
        np.testing.assert_allclose(got[k], want[k], atol=1e-6)
    # As the SavedModel's string tensor reads in numpy.
    signature = tf.saved_model.load(path).signatures["serving_default"]
    assert got["classes"].tolist() == signature(**inputs)["classes"].numpy().tolist()


def test_pool_under_concurrent_calls(toy):
    weights, path = toy
    model = TFLiteModel(path, interpreters=2, num_threads=1)
    # Different batch sizes: each call resizes the interpreter it gets.
    cases = [_toy_inputs(1 + i % 3, seed=100 + i) for i in range(48)]
    results = [None] * len(cases)
    errors = []

    def worker(indices):
        try:
            for i in indices:
                results[i] = model.predict(cases[i])
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(range(t, len(cases), 6),)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for inputs, got in zip(cases, results):
        np.testing.assert_allclose(got["probabilities"], _toy_reference(weights, **inputs)["probabilities"],
                                   atol=1e-6)
    assert model._pool.qsize() == 2  # every interpreter returned


def test_bad_inputs_are_refused(toy):
    model = TFLiteModel(toy[1])
    inputs = _toy_inputs(2, seed=0)
    with pytest.raises(ValueError, match="lack"):
        model.predict({"frames": inputs["frames"]})
    with pytest.raises(ValueError, match="shape"):
        model.predict(dict(inputs, landmarks=inputs["landmarks"][:, :1]))
    with pytest.raises(ValueError, match="batch"):
        model.predict(dict(inputs, landmarks=inputs["landmarks"][:1]))
    with pytest.raises(ValueError, match="float32"):
        model.predict(dict(inputs, frames=inputs["frames"].astype(np.float32)))


def test_usage_errors(toy, tmp_path):
    _, path = toy
    with pytest.raises(UsageError, match="mode"):
        tflite.tflite_writer("int4")
    with pytest.raises(UsageError, match="calibration"):
        tflite.tflite_writer("int8")
    with pytest.raises(UsageError, match="does not exist"):
        tflite.convert_saved_model(path, "int8", calibration_data=str(tmp_path / "nothing"))
    with pytest.raises(FileExistsError):
        tflite.write_tflite(path, "fp32")  # one is there already
    with pytest.raises(UsageError, match=INFO_FILE):
        TFLiteModel(str(tmp_path))


# The tiny model ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A `tiny` CapsNet3D trained on the synthetic fixture (its test clips classified with
    margins of 0.3 and more), exported with the fp32 TFLite model; its dynamic-range and int8
    models written into copies of the version."""
    import keras

    from tests.data.fixtures import write_dataset
    from vtcaps_tf.data.dataset import read_split
    from vtcaps_tf.export.saved_model import export_model
    from vtcaps_tf.models import build_model

    root = tmp_path_factory.mktemp("tflite_tiny")
    data = write_dataset(str(root / "data"), counts={"train": 48, "test": 24})
    keras.utils.set_random_seed(0)
    model = build_model("tiny", class_names=CLASSES, use_tpn=False)

    def arrays(split):
        pairs = [({k: v.numpy() for k, v in x.items() if k != "long_frames"}, int(y))
                 for x, y in read_split(data, split, model.contract)]
        return {k: np.stack([x[k] for x, _ in pairs]) for k in pairs[0][0]}, np.array([y for _, y in pairs])

    x, y = arrays("train")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=False)
    model.fit(x, y, batch_size=8, epochs=6, verbose=0)
    test_x, test_y = arrays("test")
    path = export_model(model, str(root / "fer"), after_save=tflite.tflite_writer("fp32"))
    versions = {"fp32": path}
    for mode in ("dynamic", "int8"):
        versions[mode] = str(root / mode)
        shutil.copytree(path, versions[mode], ignore=shutil.ignore_patterns(TFLITE_FILE + "*"))
        tflite.write_tflite(versions[mode], mode, calibration_data=data)
    signature = tf.saved_model.load(path).signatures["serving_default"]
    want = {k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in test_x.items()}).items()}
    return dict(model=model, data=data, versions=versions, test_x=test_x, test_y=test_y, want=want)


@pytest.mark.slow
def test_fixture_classes_are_clear(trained):
    probabilities = np.sort(trained["want"]["probabilities"], axis=-1)
    assert (trained["want"]["probabilities"].argmax(-1) == trained["test_y"]).all()
    assert (probabilities[:, -1] - probabilities[:, -2]).min() > 0.3


@pytest.mark.slow
def test_the_hook_writes_the_model_into_the_version(trained):
    path = trained["versions"]["fp32"]
    assert sorted(os.listdir(path)) == sorted(["assets", "assets.extra", "fingerprint.pb", "saved_model.pb",
                                               "variables", TFLITE_FILE, INFO_FILE])
    assert not [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".")]  # no temp dir left


@pytest.mark.slow
def test_a_failing_hook_leaves_no_version(trained, tmp_path):
    from vtcaps_tf.export.saved_model import export_model

    seen = []

    def fail(directory):
        seen.append((os.path.basename(directory), sorted(os.listdir(directory))))
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError, match="conversion failed"):
        export_model(trained["model"], str(tmp_path / "fer"), after_save=fail)
    # Called on the hidden directory holding the SavedModel and its card, which is then removed.
    (name, files), = seen
    assert name.startswith(".") and "saved_model.pb" in files and "assets" in files
    assert os.listdir(tmp_path / "fer") == []


@pytest.mark.slow
@pytest.mark.parametrize("mode", tflite.MODES)
def test_no_select_tf_or_custom_op(trained, mode):
    with open(os.path.join(trained["versions"][mode], TFLITE_FILE), "rb") as f:
        ops = op_names(f.read())
    assert _builtin_only(ops) == [], ops
    assert "CONV_2D" in ops and "MAX_POOL_2D" in ops


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 3])
def test_fp32_equals_the_saved_model(trained, batch):
    inputs = {k: v[:batch] for k, v in trained["test_x"].items()}
    signature = tf.saved_model.load(trained["versions"]["fp32"]).signatures["serving_default"]
    want = signature(**{k: tf.constant(v) for k, v in inputs.items()})
    got = TFLiteModel(trained["versions"]["fp32"])(**inputs)
    for k in ("probabilities", "capsule_lengths"):
        np.testing.assert_allclose(got[k], want[k].numpy(), atol=1e-5)
    assert got["classes"].tolist() == want["classes"].numpy().tolist()


# Bound on |quantized - fp32| per probability. An int8 value carries its tensor's calibrated range
# in steps of 1/255 (dynamic mode: the weights per output channel in steps of 1/254 of their
# largest, activations quantized per call); the rounding errors of the ~20 quantized layers between
# the frames and the capsules add up to a few hundredths of the capsule lengths, which lie in
# [0, 1], and so of the probabilities, their shares of the sum. On this fixture int8 reaches about
# 0.04 and dynamic 0.01; the bounds leave a factor of two for other weights, and stay below half
# the fixture's smallest top-two margin (0.3), so that no class can flip within them.
QUANTIZED_PROBABILITY_BOUND = {"dynamic": 0.02, "int8": 0.08}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["dynamic", "int8"])
def test_quantized_models_agree(trained, mode):
    model = TFLiteModel(trained["versions"][mode])
    assert model.mode == mode
    got = model.predict(trained["test_x"])
    want = trained["want"]["probabilities"]
    diff = np.abs(got["probabilities"] - want).max()
    print(f"{mode}: max |p - p_fp32| {diff:.4f}, capsule lengths {np.abs(got['capsule_lengths'] - trained['want']['capsule_lengths']).max():.4f}")
    assert diff <= QUANTIZED_PROBABILITY_BOUND[mode]
    # Every test clip's top-two margin exceeds twice the bound, so the class cannot change.
    assert (got["probabilities"].argmax(-1) == want.argmax(-1)).all()


@pytest.mark.slow
def test_int8_quantizes_the_network_and_keeps_the_float_scopes(trained):
    from vtcaps_tf.export.tflite_runtime import interpreter_class

    interpreter = interpreter_class()(model_path=os.path.join(trained["versions"]["int8"], TFLITE_FILE))
    tensors = interpreter.get_tensor_details()
    int8 = [t["name"] for t in tensors if t["dtype"] == np.int8]
    assert any(tflite.in_scopes(n, ("backbone",)) for n in int8)
    assert any(tflite.in_scopes(n, ("primary_caps",)) for n in int8)
    for scope in tflite.FLOAT_SCOPES:
        kept = [t for t in tensors if tflite.in_scopes(t["name"], (scope,))]
        assert kept and all(t["dtype"] in (np.float32, np.int32, np.bool_) for t in kept), scope
