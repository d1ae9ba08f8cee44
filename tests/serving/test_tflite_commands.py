"""The commands with a version's TFLite model (`vtcaps export --tflite`), on the teacher-free toy
(N=4, S=16) and its fp32 `model.tflite`: `vtcaps serve --prefer_tflite_model` answers TF
Serving's REST and gRPC predict (both signatures) from the interpreters with the numpy
reference's numbers and the SavedModel's metadata; `vtcaps predict` and `vtcaps stream` give the
same predictions from the TFLite model as from the SavedModel."""

import base64
import json
import os

import numpy as np
import pytest
import requests
import tensorflow as tf
import toy_model

from tests.serving.grpc_helpers import grpc_predict
from tests.face import fixtures as fx
from vtcaps_tf.cli.main import main as vtcaps
from vtcaps_tf.export.tflite_runtime import TFLITE_FILE

OUTPUTS = ("probabilities", "capsule_lengths")


def _server(base, prefer):
    from vtcaps_tf.serving.servables import ModelSpec
    from vtcaps_tf.serving.server import ModelServer, ServerConfig

    return ModelServer([ModelSpec("toy", base)], ServerConfig(
        rest_port=0, grpc_port=0, poll_wait_seconds=0, prefer_tflite_model=prefer,
        num_tflite_pools=2, num_tflite_interpreters_per_pool=2))


@pytest.fixture(scope="module")
def servers(toy_tflite_base_path):
    """The same version served from its TFLite model and from its SavedModel."""
    with _server(toy_tflite_base_path, True) as tflite, _server(toy_tflite_base_path, False) as saved:
        yield tflite, saved


def _inputs(batch, seed):
    rng = np.random.default_rng(seed)
    return {"frames": rng.integers(0, 256, (batch, toy_model.N, toy_model.S, toy_model.S, 3), dtype=np.uint8),
            "landmarks": rng.random((batch, toy_model.N, 68, 2), dtype=np.float32)}


def test_the_tflite_model_answers_and_the_saved_model_only_what_it_cannot(servers):
    tflite, saved = servers
    servable = tflite.manager.get("toy")
    assert servable.tflite is not None and servable.tflite.mode == "fp32"
    assert servable.tflite._pool.qsize() == 4  # 2 pools x 2 interpreters
    assert {k: type(s).__name__ for k, s in servable.signatures.items()} == {
        "serving_default": "TFLiteSignature", "serve_examples": "TFLiteSignature", "echo": "Signature"}
    assert saved.manager.get("toy").tflite is None


def test_rest_predict_equals_the_reference_and_the_saved_model(servers):
    tflite, saved = servers
    inputs = _inputs(3, seed=1)
    body = {"inputs": {k: v.tolist() for k, v in inputs.items()}}
    got = requests.post(f"{tflite.rest_url}/v1/models/toy:predict", json=body).json()["outputs"]
    want = requests.post(f"{saved.rest_url}/v1/models/toy:predict", json=body).json()["outputs"]
    reference = toy_model.reference(inputs)
    for key in OUTPUTS:
        np.testing.assert_allclose(got[key], reference[key], atol=1e-5, rtol=0)
        np.testing.assert_allclose(got[key], want[key], atol=1e-5, rtol=0)
    assert got["classes"] == want["classes"] == [toy_model.CLASSES] * 3
    # Row format too, one instance at a time.
    rows = requests.post(f"{tflite.rest_url}/v1/models/toy:predict", json={"instances": [
        {k: v[0].tolist() for k, v in inputs.items()}]}).json()["predictions"]
    np.testing.assert_allclose(rows[0]["probabilities"], reference["probabilities"][0], atol=1e-5, rtol=0)


def test_grpc_predict_equals_the_reference(servers):
    tflite, _ = servers
    inputs = _inputs(2, seed=2)
    outputs, response = grpc_predict(tflite.grpc_port, "toy", inputs)
    reference = toy_model.reference(inputs)
    for key in OUTPUTS:
        np.testing.assert_allclose(outputs[key], reference[key], atol=1e-5, rtol=0)
    assert outputs["classes"].tolist() == [[c.encode() for c in toy_model.CLASSES]] * 2
    assert response.model_spec.version.value == 1


def test_serve_examples_decodes_the_records_for_the_interpreter(servers):
    tflite, saved = servers
    rng = np.random.default_rng(3)
    # Stored windows of 6 frames whose clip starts at 1: the toy decodes frames 1..4.
    crops = rng.integers(0, 256, (2, 6, toy_model.S, toy_model.S, 3), dtype=np.uint8)
    landmarks = rng.random((2, 6, 68, 2), dtype=np.float32)
    examples = [toy_model.CONTRACT.example(c, lm, 1) for c, lm in zip(crops, landmarks)]
    body = {"signature_name": "serve_examples",
            "inputs": {"examples": [{"b64": base64.b64encode(e).decode()} for e in examples]}}
    got = requests.post(f"{tflite.rest_url}/v1/models/toy:predict", json=body)
    assert got.status_code == 200, got.text
    want = requests.post(f"{saved.rest_url}/v1/models/toy:predict", json=body).json()["outputs"]
    for key in OUTPUTS:
        np.testing.assert_allclose(got.json()["outputs"][key], want[key], atol=1e-5, rtol=0)
    bad = requests.post(f"{tflite.rest_url}/v1/models/toy:predict", json={
        "signature_name": "serve_examples", "inputs": {"examples": [{"b64": base64.b64encode(b"junk").decode()}]}})
    assert bad.status_code == 400 and "decode" in bad.json()["error"]


def test_metadata_is_the_saved_models(servers):
    tflite, saved = servers
    got = requests.get(f"{tflite.rest_url}/v1/models/toy/metadata").json()
    assert got == requests.get(f"{saved.rest_url}/v1/models/toy/metadata").json()
    # As TF Serving lists them: the SavedModel's own init op too.
    assert set(got["metadata"]["signature_def"]["signature_def"]) == {
        "serving_default", "serve_examples", "echo", "__saved_model_init_op"}


def test_a_version_without_tflite_is_served_from_its_saved_model(toy_base_path):
    with _server(toy_base_path, True) as server:
        servable = server.manager.get("toy")
        assert servable.tflite is None and "long_frames" in servable.signature("serving_default").inputs


def test_serve_flags(capsys):
    from vtcaps_tf.cli.serve import build_parser, server_config
    from vtcaps_tf.serving.server import check_config

    parse = build_parser().parse_args
    assert parse([]).prefer_tflite_model is False
    assert parse(["--prefer_tflite_model"]).prefer_tflite_model is True
    assert parse(["--prefer_tflite_model=true"]).prefer_tflite_model is True
    assert parse(["--prefer-tflite-model", "false"]).prefer_tflite_model is False
    config = server_config(parse(["--prefer_tflite_model", "--num_tflite_pools", "3",
                                  "--num_tflite_interpreters_per_pool", "2"]))
    assert config.tflite_options().interpreters == 6
    with pytest.raises(SystemExit) as exc:  # argparse's own exit for a malformed flag
        vtcaps(["serve", "--model-base-path", "x", "--prefer_tflite_model=maybe"])
    assert exc.value.code == 2
    assert "expected true or false" in capsys.readouterr().err
    from vtcaps_tf.errors import UsageError

    with pytest.raises(UsageError, match="at least 1"):
        check_config(server_config(parse(["--num_tflite_pools", "0"])))


# predict and stream -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def video(tmp_path_factory):
    face = fx.face_image(100)
    frames = np.full((12, face.shape[0] + 20, face.shape[1] + 40, 3), 128, np.uint8)
    frames[:, 10:10 + face.shape[0], 20:20 + face.shape[1]] = face
    return fx.write_video(str(tmp_path_factory.mktemp("tflite_video") / "face.avi"), frames, fps=10.0)


def _predict(video, model_args, capsys):
    rc = vtcaps(["predict", video, "--format", "json", *model_args])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    (result,) = json.loads(captured.out)
    model_line = [line for line in captured.err.splitlines() if line.startswith("model: ")]
    return np.array([[c["probabilities"][k] for k in toy_model.CLASSES] for c in result["clips"]]), model_line[0]


def test_predict_with_the_tflite_model_gives_the_saved_models_predictions(video, toy_tflite_base_path, capsys):
    want, line = _predict(video, ["--saved-model", toy_tflite_base_path], capsys)
    assert line.startswith("model: SavedModel ")
    assert want.shape == (3, len(toy_model.CLASSES))
    tflite_file = os.path.join(toy_tflite_base_path, "1", TFLITE_FILE)
    for args in (["--saved-model", toy_tflite_base_path, "--prefer-tflite-model"],
                 ["--saved-model", tflite_file]):
        got, line = _predict(video, args, capsys)
        assert line.startswith(f"model: TFLite model {tflite_file} (fp32)")
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_prefer_tflite_is_for_a_model_read_here(video, tmp_path, capsys):
    assert vtcaps(["predict", video, "--server", "http://127.0.0.1:1", "--prefer-tflite-model"]) == 2
    assert "--saved-model" in capsys.readouterr().err
    not_a_model = tmp_path / "model.txt"
    not_a_model.write_text("no")
    assert vtcaps(["predict", video, "--saved-model", str(not_a_model)]) == 2
    assert "not a .tflite model" in capsys.readouterr().err


def _stream(video, model_args, tmp_path, capsys):
    out = tmp_path / f"preds{len(model_args)}.jsonl"
    assert vtcaps(["stream", video, "--output", str(out), *model_args]) == 0, capsys.readouterr().err
    capsys.readouterr()
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    return [(r["frame"], r["face"]) for r in lines], np.array(
        [[r["probabilities"][k] for k in toy_model.CLASSES] for r in lines])


def test_stream_with_the_tflite_model_gives_the_saved_models_predictions(video, toy_tflite_base_path,
                                                                         tmp_path, capsys):
    where, want = _stream(video, ["--saved-model", toy_tflite_base_path], tmp_path, capsys)
    assert len(where) >= 2
    got_where, got = _stream(video, ["--saved-model", toy_tflite_base_path, "--prefer-tflite-model"],
                             tmp_path, capsys)
    assert got_where == where
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
