"""`vtcaps serve --prefer_tflite_model` with the real `tiny` VT-3DCapsNet: its export (the session's
shared one, copied) with an fp32 `model.tflite` answers TF Serving's REST and gRPC predict, and
`serve_examples`, with the SavedModel's outputs to 1e-5, and its metadata is the SavedModel's.

Converting the model takes a while on 2 cores, hence `slow`."""

import base64
import shutil

import numpy as np
import pytest
import requests
import tensorflow as tf

from tests.serving.grpc_helpers import grpc_predict

pytestmark = pytest.mark.slow

OUTPUTS = ("probabilities", "capsule_lengths")


@pytest.fixture(scope="module")
def version(tiny_export, tmp_path_factory):
    from vtcaps_tf.export.tflite import write_tflite

    base = tmp_path_factory.mktemp("tflite_tiny") / "fer"
    shutil.copytree(tiny_export.path, base / "1")
    write_tflite(str(base / "1"), "fp32")
    return tiny_export, str(base)


@pytest.fixture(scope="module")
def servers(version):
    from vtcaps_tf.serving.servables import ModelSpec
    from vtcaps_tf.serving.server import ModelServer, ServerConfig

    _, base = version
    with ModelServer([ModelSpec("vtcaps", base)], ServerConfig(rest_port=0, grpc_port=0, poll_wait_seconds=0,
                                                               prefer_tflite_model=True)) as tflite, \
            ModelServer([ModelSpec("vtcaps", base)], ServerConfig(rest_port=0, grpc_port=0,
                                                                  poll_wait_seconds=0)) as saved:
        yield tflite, saved


def _inputs(model, batch, seed):
    from tests.models.helpers import random_inputs

    return random_inputs(model.config, batch, seed, with_teacher=False)


def _saved_model(version, inputs, signature="serving_default"):
    tiny, base = version
    fn = tf.saved_model.load(f"{base}/1").signatures[signature]
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


def test_the_version_runs_on_the_interpreters(servers):
    tflite, saved = servers
    assert tflite.manager.get("vtcaps").tflite is not None
    assert tflite.manager.get("vtcaps")._loaded is None  # both signatures from the TFLite model
    assert saved.manager.get("vtcaps").tflite is None


def test_rest_predict_equals_the_saved_model(version, servers):
    tflite, _ = servers
    inputs = _inputs(version[0].model, 2, seed=1)
    r = requests.post(f"{tflite.rest_url}/v1/models/vtcaps:predict",
                      json={"inputs": {k: v.tolist() for k, v in inputs.items()}})
    assert r.status_code == 200, r.text
    want = _saved_model(version, inputs)
    for key in OUTPUTS:
        np.testing.assert_allclose(r.json()["outputs"][key], want[key], atol=1e-5, rtol=0)
    assert r.json()["outputs"]["classes"] == [version[0].classes] * 2


def test_grpc_predict_equals_the_saved_model(version, servers):
    tflite, _ = servers
    inputs = _inputs(version[0].model, 2, seed=2)
    outputs, _ = grpc_predict(tflite.grpc_port, "vtcaps", inputs, timeout=120)
    want = _saved_model(version, inputs)
    for key in OUTPUTS:
        np.testing.assert_allclose(outputs[key], want[key], atol=1e-5, rtol=0)


def test_serve_examples_equals_the_saved_model(version, servers):
    from tests.data.fixtures import synthetic_clip

    tflite, _ = servers
    cfg = version[0].model.config
    rng = np.random.default_rng(3)
    examples = [synthetic_clip(k, 3, cfg.long_frames, cfg.clip_frames, cfg.image_size, rng)
                .to_example().SerializeToString() for k in range(2)]
    r = requests.post(f"{tflite.rest_url}/v1/models/vtcaps:predict", json={
        "signature_name": "serve_examples",
        "instances": [{"b64": base64.b64encode(e).decode()} for e in examples]})
    assert r.status_code == 200, r.text
    want = _saved_model(version, {"examples": np.array(examples, dtype=object)}, "serve_examples")
    for key in OUTPUTS:
        np.testing.assert_allclose([row[key] for row in r.json()["predictions"]], want[key], atol=1e-5, rtol=0)


def test_metadata_is_the_saved_models(servers):
    tflite, saved = servers
    url = "{}/v1/models/vtcaps/metadata"
    assert requests.get(url.format(tflite.rest_url)).json() == requests.get(url.format(saved.rest_url)).json()
