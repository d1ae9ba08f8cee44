"""The REST API with plain HTTP requests, against the toy model: shapes of every answer as TF Serving
documents them, numbers equal to the in-process call, and bad requests answered with JSON errors."""

import base64
import json

import numpy as np
import pytest
import requests
import toy_model


def _url(server, tail=""):
    return f"{server.rest_url}/v1/models/toy{tail}"


def _columnar(inputs):
    return {"inputs": {k: v.tolist() for k, v in inputs.items()}}


def test_status_is_tf_serving_json(toy_server):
    r = requests.get(_url(toy_server))
    assert r.status_code == 200
    assert r.json() == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert requests.get(_url(toy_server, "/versions/1")).json() == r.json()


def test_metadata_holds_signature_defs(toy_server):
    r = requests.get(_url(toy_server, "/metadata"))
    assert r.status_code == 200
    body = r.json()
    assert body["model_spec"] == {"name": "toy", "version": "1", "signature_name": ""}
    sigs = body["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "serve_examples", "echo"} <= set(sigs)
    frames = sigs["serving_default"]["inputs"]["frames"]
    assert frames["dtype"] == "DT_UINT8"
    assert [d["size"] for d in frames["tensor_shape"]["dim"]] == [
        "-1", str(toy_model.N), str(toy_model.S), str(toy_model.S), "3"]
    assert set(sigs["serving_default"]["outputs"]) == {
        "probabilities", "capsule_lengths", "classes", "tpn_probabilities"}
    assert sigs["serve_examples"]["inputs"]["examples"]["dtype"] == "DT_STRING"


def test_columnar_predict_equals_in_process(toy_server, toy_in_process):
    inputs = toy_model.random_inputs(3, seed=1)
    r = requests.post(_url(toy_server, ":predict"), json=_columnar(inputs))
    assert r.status_code == 200, r.text
    outputs = r.json()["outputs"]
    expected = toy_in_process(inputs)
    reference = toy_model.reference(inputs)
    for key in ("probabilities", "capsule_lengths", "tpn_probabilities"):
        np.testing.assert_allclose(outputs[key], expected[key], atol=1e-5, rtol=0)
        np.testing.assert_allclose(outputs[key], reference[key], atol=1e-5, rtol=0)
    assert outputs["classes"] == [toy_model.CLASSES] * 3


def test_row_predict_gives_one_object_per_instance(toy_server, toy_in_process):
    inputs = toy_model.random_inputs(2, seed=2)
    rows = [{k: v[i].tolist() for k, v in inputs.items()} for i in range(2)]
    r = requests.post(_url(toy_server, "/versions/1:predict"),
                      json={"signature_name": "serving_default", "instances": rows})
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    expected = toy_in_process(inputs)
    assert len(predictions) == 2
    for i, row in enumerate(predictions):
        assert set(row) == {"probabilities", "capsule_lengths", "classes", "tpn_probabilities"}
        np.testing.assert_allclose(row["probabilities"], expected["probabilities"][i], atol=1e-5, rtol=0)
        assert row["classes"] == toy_model.CLASSES


def test_b64_inputs_and_bytes_outputs(toy_server):
    blob = bytes([0, 1, 2, 255, 128])
    r = requests.post(_url(toy_server, ":predict"), json={
        "signature_name": "echo",
        "instances": [{"b64": base64.b64encode(blob).decode()}, "héllo"]})
    assert r.status_code == 200, r.text
    rows = r.json()["predictions"]
    # Outputs named *_bytes come back base64-wrapped; other numbers as they are.
    assert base64.b64decode(rows[0]["data_bytes"]["b64"]) == blob
    assert base64.b64decode(rows[1]["data_bytes"]["b64"]) == "héllo".encode()
    assert [row["size"] for row in rows] == [5, len("héllo".encode())]


def test_serve_examples_takes_b64_strings(toy_server):
    # Two schema-2 records (JPEG crops + landmarks) as base64 strings in TF Serving's JSON.
    rng = np.random.default_rng(6)
    contract = toy_model.CONTRACT
    windows = [(rng.integers(0, 256, (toy_model.M, toy_model.S, toy_model.S, 3), dtype=np.uint8),
                rng.random((toy_model.M, 68, 2), dtype=np.float32)) for _ in range(2)]
    examples = [contract.example(c, lm, contract.before) for c, lm in windows]
    r = requests.post(_url(toy_server, ":predict"), json={
        "signature_name": "serve_examples",
        "inputs": {"examples": [{"b64": base64.b64encode(e).decode()} for e in examples]}})
    assert r.status_code == 200, r.text
    probs = np.array(r.json()["outputs"]["probabilities"])
    # The numpy head on the records' own decoded inputs.
    decoded = [contract.parse_example(e)[0] for e in examples]
    want = toy_model.reference({k: np.stack([d[k].numpy() for d in decoded]) for k in decoded[0]})
    np.testing.assert_allclose(probs, want["probabilities"], atol=1e-5)
    assert not np.allclose(probs[0], probs[1])


def test_single_input_columnar_value_without_name(toy_server):
    r = requests.post(_url(toy_server, ":predict"),
                      json={"signature_name": "echo", "inputs": ["ab", "cde"]})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"]["size"] == [2, 3]


def _good_request(server):
    r = requests.post(_url(server, ":predict"), json=_columnar(toy_model.random_inputs(1, seed=9)))
    assert r.status_code == 200, r.text


def _wrong_shape():
    x = toy_model.random_inputs(1)
    x["frames"] = x["frames"][:, :2]
    return _columnar(x)


def _wrong_dtype():
    body = _columnar(toy_model.random_inputs(1))
    body["inputs"]["frames"] = (np.asarray(body["inputs"]["frames"]) + 0.5).tolist()
    return body


def _strings_for_numbers():
    body = _columnar(toy_model.random_inputs(1))
    body["inputs"]["landmarks"] = "not a tensor"
    return body


def _out_of_range():
    body = _columnar(toy_model.random_inputs(1))
    frames = np.asarray(body["inputs"]["frames"], np.int64)
    frames[0, 0, 0, 0, 0] = 300
    body["inputs"]["frames"] = frames.tolist()
    return body


def _ragged():
    body = _columnar(toy_model.random_inputs(1))
    body["inputs"]["frames"][0][0][0] = body["inputs"]["frames"][0][0][0][:-1]
    return body


def _missing_input():
    body = _columnar(toy_model.random_inputs(1))
    del body["inputs"]["landmarks"]
    return body


BAD_REQUESTS = {
    "malformed json": (":predict", b'{"inputs": {"frames": [1, 2', 400),
    "not an object": (":predict", b"[1, 2, 3]", 400),
    "neither inputs nor instances": (":predict", b'{"signature_name": "serving_default"}', 400),
    "wrong shape": (":predict", _wrong_shape, 400),
    "wrong dtype (floats for uint8)": (":predict", _wrong_dtype, 400),
    "strings for numbers": (":predict", _strings_for_numbers, 400),
    "uint8 out of range": (":predict", _out_of_range, 400),
    "ragged nested lists": (":predict", _ragged, 400),
    "missing input": (":predict", _missing_input, 400),
    "unknown signature": (":predict", lambda: {**_columnar(toy_model.random_inputs(1)),
                                               "signature_name": "nope"}, 400),
    "unknown version": ("/versions/7:predict", lambda: _columnar(toy_model.random_inputs(1)), 404),
    "non-numeric version": ("/versions/abc:predict", lambda: _columnar(toy_model.random_inputs(1)), 400),
    "unknown label": ("/labels/canary:predict", lambda: _columnar(toy_model.random_inputs(1)), 404),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_gets_json_error_and_server_stays_up(toy_server, case):
    tail, body, status = BAD_REQUESTS[case]
    data = body if isinstance(body, bytes) else json.dumps(body(), allow_nan=False).encode()
    r = requests.post(_url(toy_server, tail), data=data)
    assert r.status_code == status, r.text
    assert isinstance(r.json()["error"], str) and r.json()["error"]
    _good_request(toy_server)


def test_unknown_model_and_path_are_404(toy_server):
    r = requests.get(f"{toy_server.rest_url}/v1/models/nope")
    assert r.status_code == 404 and "error" in r.json()
    r = requests.post(f"{toy_server.rest_url}/v1/models/nope:predict", json={"instances": [1]})
    assert r.status_code == 404 and "error" in r.json()
    r = requests.get(f"{toy_server.rest_url}/v2/whatever")
    assert r.status_code == 404 and "error" in r.json()
    _good_request(toy_server)


def test_100_mb_body_is_refused_with_413(toy_server):
    # The server's limit is 8 MiB in this fixture; the body is read in chunks and discarded.
    r = requests.post(_url(toy_server, ":predict"), data=b" " * (100 * 1000 * 1000),
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert "exceeds the limit" in r.json()["error"]
    _good_request(toy_server)


def test_expect_100_continue_with_large_body_is_refused_before_sending(toy_server):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", toy_server.rest_port, timeout=10)
    conn.putrequest("POST", "/v1/models/toy:predict")
    conn.putheader("Content-Length", str(100 * 1000 * 1000))
    conn.putheader("Expect", "100-continue")
    conn.endheaders()
    response = conn.getresponse()  # answered on the headers alone: no body was sent
    assert response.status == 413
    assert "error" in json.loads(response.read())
    conn.close()
    _good_request(toy_server)
