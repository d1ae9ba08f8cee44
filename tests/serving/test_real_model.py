"""End to end with the real `tiny` VT-3DCapsNet exported by `export_model` (the default,
teacher-free export): REST (plain HTTP) and gRPC (TF Serving's PredictionServiceStub) give the
full Keras model's own capsule outputs to 1e-5, `serve_examples` takes the Beam job's
SequenceExamples, and `vtcaps predict` runs against it (its clips sent as records, base64).

Building and exporting the model takes about a minute on 2 cores, hence `slow`."""

import base64
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import requests
import tensorflow as tf

from tests.serving.grpc_helpers import grpc_predict

pytestmark = pytest.mark.slow

CLASSES = ["anger", "happy", "sad"]
OUTPUTS = ("probabilities", "capsule_lengths")  # the default export serves no TPN head


@pytest.fixture(scope="module")
def tiny(tiny_export):
    """The session's shared `tiny` model and the base path holding its export as version 1."""
    return tiny_export.model, tiny_export.base


@pytest.fixture(scope="module")
def server(tiny):
    from vtcaps_tf.serving.servables import ModelSpec
    from vtcaps_tf.serving.server import ModelServer, ServerConfig

    with ModelServer([ModelSpec("vtcaps", tiny[1])],
                     ServerConfig(rest_port=0, grpc_port=0, poll_wait_seconds=0)) as srv:
        yield srv


def _inputs(model, batch, seed=0):
    """The served inputs (no long_frames)."""
    from tests.models.helpers import random_inputs

    return random_inputs(model.config, batch, seed, with_teacher=False)


def _keras(model, inputs):
    """The full model (teacher included, on an arbitrary long window): its capsule outputs."""
    from tests.models.helpers import random_inputs

    full = dict(inputs, long_frames=random_inputs(model.config, len(inputs["frames"]), 99)["long_frames"])
    out = model(full, training=False)
    return {k: np.asarray(out[k]) for k in OUTPUTS}


def test_metadata_has_the_model_shapes(tiny, server):
    model, _ = tiny
    cfg = model.config
    meta = requests.get(f"{server.rest_url}/v1/models/vtcaps/metadata").json()
    inputs = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    dims = {k: [int(d["size"]) for d in v["tensor_shape"]["dim"]] for k, v in inputs.items()}
    s = cfg.image_size
    assert dims == {"frames": [-1, cfg.clip_frames, s, s, 3], "landmarks": [-1, cfg.clip_frames, 68, 2]}


def test_rest_equals_keras_model(tiny, server):
    model, _ = tiny
    inputs = _inputs(model, 2, seed=1)
    r = requests.post(f"{server.rest_url}/v1/models/vtcaps:predict",
                      json={"inputs": {k: v.tolist() for k, v in inputs.items()}})
    assert r.status_code == 200, r.text
    outputs = r.json()["outputs"]
    expected = _keras(model, inputs)
    for key in OUTPUTS:
        np.testing.assert_allclose(outputs[key], expected[key], atol=1e-5, rtol=0)
    assert outputs["classes"] == [CLASSES, CLASSES]


def test_grpc_equals_keras_model(tiny, server):
    model, _ = tiny
    inputs = _inputs(model, 2, seed=2)
    outputs, _ = grpc_predict(server.grpc_port, "vtcaps", inputs, "serving_default")
    expected = _keras(model, inputs)
    for key in OUTPUTS:
        np.testing.assert_allclose(outputs[key], expected[key], atol=1e-5, rtol=0)


def test_serve_examples_takes_beam_sequence_examples(tiny, server):
    from vtcaps_tf.data import features

    model, _ = tiny
    cfg = model.config
    rng = np.random.default_rng(3)
    m, s = cfg.long_frames, cfg.image_size
    clip = features.Clip(
        video_id="v", subject_id="s", label=1, label_name="happy", clip_index=0,
        clip_frames=cfg.clip_frames, clip_offset=(m - cfg.clip_frames) // 2, fps=30.0, source="test",
        frames_jpeg=[features.encode_jpeg(rng.integers(0, 256, (s, s, 3), dtype=np.uint8)) for _ in range(m)],
        landmarks=rng.random((m, 68, 2)), image_size=s)
    serialized = clip.to_example().SerializeToString()
    r = requests.post(f"{server.rest_url}/v1/models/vtcaps:predict", json={
        "signature_name": "serve_examples",
        "instances": [{"b64": base64.b64encode(serialized).decode()}]})
    assert r.status_code == 200, r.text
    (row,) = r.json()["predictions"]
    decoded, _ = model.contract.parse_example(tf.constant(serialized))
    expected = _keras(model, {k: v[None].numpy() for k, v in decoded.items()})
    np.testing.assert_allclose(row["probabilities"], expected["probabilities"][0], atol=1e-5, rtol=0)


def test_predict_command_against_served_model(tiny, server, tmp_path, capsys, monkeypatch):
    import cv2
    import matplotlib.cbook

    from vtcaps_tf.data.features import encode_jpeg
    from vtcaps_tf.data.storage import REQUEST_JPEG_QUALITY
    from vtcaps_tf.cli.predict import main as predict_command
    from vtcaps_tf.apps.predict_models import InProcessModel

    model, base = tiny
    n = model.config.clip_frames
    bgr = cv2.resize(cv2.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)),
                     (128, 160))
    video = tmp_path / "face.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (128, 160))
    for t in range(2 * n + 3):
        writer.write(np.roll(bgr, (t % 3, (2 * t) % 3), axis=(0, 1)))
    writer.release()
    rc = predict_command([str(video), "--server", server.rest_url, "--model-name", "vtcaps", "--format", "json"])
    remote = json.loads(capsys.readouterr().out)
    assert rc == 0

    # Over REST the crops travel as JPEG (serve_examples, at REQUEST_JPEG_QUALITY), in process as
    # pixels. How much an untrained model's outputs move under that round trip depends on its
    # random weights, so the in-process run is given the same round trip (decoded as the served
    # graph decodes it): then the two paths must agree to float precision.
    in_process = InProcessModel.predict_windows

    def jpeg_round_trip(self, windows):
        return in_process(self, [SimpleNamespace(
            crops=[tf.io.decode_jpeg(encode_jpeg(np.asarray(c), REQUEST_JPEG_QUALITY)).numpy()
                   for c in w.crops],
            landmarks=w.landmarks, offset=w.offset) for w in windows])

    monkeypatch.setattr(InProcessModel, "predict_windows", jpeg_round_trip)
    rc = predict_command([str(video), "--saved-model", os.path.join(base, "1"), "--format", "json"])
    local = json.loads(capsys.readouterr().out)
    assert rc == 0
    (a,), (b,) = remote, local
    assert a["num_clips"] == 2 and set(a["probabilities"]) == set(CLASSES)
    for ca, cb in zip(a["clips"], b["clips"]):
        for k in CLASSES:
            assert ca["probabilities"][k] == pytest.approx(cb["probabilities"][k], abs=1e-5)
