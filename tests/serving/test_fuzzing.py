"""Fuzzing the REST and gRPC surfaces (hypothesis, derandomized: the same examples each run):
malformed JSON bodies, tensors of wrong shapes and dtypes, truncated and random protobufs. No
answer is a server error (5xx, or a gRPC code mapping to one) other than 503, and the server
stays up. The fast run tries 200 inputs; the slow one 4600, and checks that the
process's resident memory stays flat."""

import json
import re

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow_serving.apis import predict_pb2

from vtcaps_tf.serving.errors import HTTP_STATUS

PREDICT = "/tensorflow.serving.PredictionService/Predict"
SIGNATURES = ["serving_default", "serve_examples", "echo", "", "nope"]
INPUT_NAMES = ["frames", "landmarks", "long_frames", "examples", "data", "x"]
DTYPES = [np.uint8, np.float32, np.float64, np.int64, np.int32, np.bool_, np.float16]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(INPUT_NAMES + ["b64", "inputs",
                                                                                               "instances"]),
                                                                 inner, max_size=3),
    max_leaves=20)


@st.composite
def tensors(draw):
    dtype = draw(st.sampled_from(DTYPES))
    shape = tuple(draw(st.lists(st.integers(0, 5), max_size=5)))
    return np.full(shape, draw(st.integers(0, 3)), dtype)


@st.composite
def predict_bodies(draw):
    """JSON bodies shaped like predict requests, with wrong names, shapes, dtypes and kinds."""
    named = draw(st.dictionaries(st.sampled_from(INPUT_NAMES), tensors(), max_size=4))
    body = {}
    form = draw(st.sampled_from(["inputs", "instances", "both", "neither"]))
    if form in ("inputs", "both"):
        body["inputs"] = {k: v.tolist() for k, v in named.items()}
    if form in ("instances", "both"):
        body["instances"] = [{k: v.tolist() for k, v in named.items()}] * draw(st.integers(0, 2))
    if draw(st.booleans()):
        body["signature_name"] = draw(st.sampled_from(SIGNATURES) | json_values)
    return json.dumps(body).encode()


rest_bodies = (predict_bodies() | json_values.map(lambda v: json.dumps(v).encode())
               | st.binary(max_size=64)
               | predict_bodies().flatmap(lambda b: st.integers(0, len(b)).map(lambda n: b[:n])))


@st.composite
def predict_protos(draw):
    """Serialized PredictRequests: tensors of wrong dtypes and shapes, contents that disagree with
    their shapes, then maybe truncated or with a byte flipped; or random bytes."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=64))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = draw(st.sampled_from(["toy", "toy", "", "other"]))
    request.model_spec.signature_name = draw(st.sampled_from(SIGNATURES))
    for name in draw(st.lists(st.sampled_from(INPUT_NAMES), max_size=4, unique=True)):
        proto = request.inputs[name]
        proto.CopyFrom(tf.make_tensor_proto(draw(tensors())))
        if draw(st.booleans()):
            proto.dtype = draw(st.integers(0, 30))
        if draw(st.booleans()):
            proto.tensor_content = draw(st.binary(max_size=32))
        if draw(st.booleans()):
            proto.tensor_shape.dim.add().size = draw(st.integers(-3, 10**6))
    data = request.SerializeToString()
    cut = draw(st.sampled_from(["whole", "truncated", "flipped"]))
    if cut == "truncated" and data:
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif cut == "flipped" and data:
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
    return data


def _check_rest(server, body, verb):
    r = requests.post(f"{server.rest_url}/v1/models/toy:{verb}", data=body,
                      headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code < 500 or r.status_code == 503, (r.status_code, r.text, body[:200])
    assert "error" in r.json() or r.status_code == 200


def _check_grpc(call, data):
    try:
        call(data, timeout=60)
    except grpc.RpcError as err:
        code = err.code().name
        assert code != "UNKNOWN" and (HTTP_STATUS[code] < 500 or code == "UNAVAILABLE"), (code, err.details())


@pytest.fixture(scope="module")
def raw_predict(toy_server):
    with grpc.insecure_channel(f"127.0.0.1:{toy_server.grpc_port}") as channel:
        yield channel.unary_unary(PREDICT, request_serializer=lambda b: b, response_deserializer=lambda b: b)


def _fuzz(toy_server, raw_predict, examples):
    common = settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))

    @common
    @given(body=rest_bodies, verb=st.sampled_from(["predict", "predict", "classify", "regress"]))
    def rest(body, verb):
        _check_rest(toy_server, body, verb)

    @common
    @given(data=predict_protos())
    def grpc_(data):
        _check_grpc(raw_predict, data)

    rest()
    grpc_()
    status = requests.get(f"{toy_server.rest_url}/v1/models/toy", timeout=10).json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"


def test_fuzzing_rest_and_grpc(toy_server, raw_predict):
    _fuzz(toy_server, raw_predict, 100)


def _rss_bytes():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) * 1024


@pytest.mark.slow
def test_fuzzing_thousands_with_flat_memory(toy_server, raw_predict):
    _fuzz(toy_server, raw_predict, 300)  # every code path allocated once
    before = _rss_bytes()
    _fuzz(toy_server, raw_predict, 2000)
    growth = _rss_bytes() - before
    assert growth < 0.10 * before, f"RSS grew {growth / 2**20:.0f} MB from {before / 2**20:.0f} MB"
