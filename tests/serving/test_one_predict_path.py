"""REST and gRPC Predict are one path: the same requests sent both ways give the same outputs,
and the same error codes (REST's HTTP status is TF Serving's mapping of the gRPC code) with the
same messages wherever the check is the shared predictor's."""

import base64

import grpc
import numpy as np
import pytest
import requests

import toy_model
from grpc_helpers import grpc_predict
from vtcaps_tf.serving.errors import HTTP_STATUS


def _rest(server, inputs, signature=None, model="toy"):
    body = {"inputs": {k: ([{"b64": base64.b64encode(b).decode()} for b in v] if v.dtype == object
                           else v.tolist()) for k, v in inputs.items()}}
    if signature:
        body["signature_name"] = signature
    r = requests.post(f"{server.rest_url}/v1/models/{model}:predict", json=body, timeout=60)
    return r.status_code, r.json()


def _grpc(server, inputs, signature=None, model="toy"):
    try:
        outputs, _ = grpc_predict(server.grpc_port, model, inputs, signature)
        return "OK", outputs
    except grpc.RpcError as err:
        return err.code().name, err.details()


def _big_frame_record():
    import cv2

    ok, big = cv2.imencode(".jpg", np.zeros((toy_model.S * 2, toy_model.S, 3), np.uint8))
    record = toy_model.CONTRACT.example(np.zeros((toy_model.M, toy_model.S, toy_model.S, 3), np.uint8),
                                        np.zeros((toy_model.M, 68, 2), np.float32), toy_model.CONTRACT.before)
    from tensorflow.core.example import example_pb2

    example = example_pb2.SequenceExample.FromString(record)
    example.feature_lists.feature_list["frames"].feature[1].bytes_list.value[0] = big.tobytes()
    return example.SerializeToString()


CASES = {
    "ok": (lambda: toy_model.random_inputs(2, seed=3), None),
    "a missing input": (lambda: {"frames": toy_model.random_inputs(1)["frames"]}, None),
    "a wrong shape": (lambda: dict(toy_model.random_inputs(1), landmarks=np.zeros((1, 3, 68, 2), np.float32)), None),
    "an unknown signature": (lambda: toy_model.random_inputs(1), "nope"),
    "a frame larger than the crop": (lambda: {"examples": np.array([_big_frame_record()], dtype=object)},
                                     "serve_examples"),
    "a record that is no SequenceExample": (lambda: {"examples": np.array([b"\x01garbage"], dtype=object)},
                                            "serve_examples"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_same_request_both_ways(toy_server, case):
    make, signature = CASES[case]
    inputs = make()
    status, rest = _rest(toy_server, inputs, signature)
    code, got = _grpc(toy_server, inputs, signature)
    assert status == HTTP_STATUS[code], (status, code, rest, got)
    if code == "OK":
        assert set(rest["outputs"]) == set(got)
        for key, value in rest["outputs"].items():
            if got[key].dtype == object:  # classes: the label names
                assert value == [[b.decode() for b in row] for row in got[key]]
            else:
                np.testing.assert_allclose(np.array(value, np.float64), got[key].astype(np.float64), atol=1e-6)
    else:
        assert rest["error"] == got  # the same check made the same message
    if case == "a frame larger than the crop":
        assert code == "INVALID_ARGUMENT" and "16x32 JPEG is larger than the model's 16x16" in got


def test_an_unknown_model_is_not_found_both_ways(toy_server):
    inputs = toy_model.random_inputs(1)
    status, rest = _rest(toy_server, inputs, model="nobody")
    code, got = _grpc(toy_server, inputs, model="nobody")
    assert (status, code) == (404, "NOT_FOUND") and rest["error"] == got
