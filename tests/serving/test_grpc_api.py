"""The gRPC API through TF Serving's own Python client stubs."""

import grpc
import numpy as np
import pytest
import tensorflow as tf
import toy_model
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)


@pytest.fixture(scope="module")
def channel(toy_server):
    ch = grpc.insecure_channel(f"127.0.0.1:{toy_server.grpc_port}",
                               options=[("grpc.max_send_message_length", -1)])
    yield ch
    ch.close()


def _request(inputs, signature="serving_default", version=None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "toy"
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def test_predict_equals_in_process(channel, toy_in_process):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    inputs = toy_model.random_inputs(2, seed=3)
    response = stub.Predict(_request(inputs), timeout=30)
    assert response.model_spec.name == "toy"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    expected = toy_in_process(inputs)
    for key in ("probabilities", "capsule_lengths", "tpn_probabilities"):
        np.testing.assert_allclose(tf.make_ndarray(response.outputs[key]), expected[key], atol=1e-5, rtol=0)
    classes = tf.make_ndarray(response.outputs["classes"])
    assert [c.decode() for c in classes[1]] == toy_model.CLASSES


def test_output_filter(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = _request(toy_model.random_inputs(1))
    request.output_filter.append("probabilities")
    response = stub.Predict(request, timeout=30)
    assert list(response.outputs) == ["probabilities"]


def test_metadata_and_status(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "toy"
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request, timeout=30)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(sig_map)
    frames = sig_map.signature_def["serving_default"].inputs["frames"]
    assert frames.dtype == tf.uint8.as_datatype_enum
    assert [d.size for d in frames.tensor_shape.dim] == [-1, toy_model.N, toy_model.S, toy_model.S, 3]

    status_stub = model_service_pb2_grpc.ModelServiceStub(channel)
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "toy"
    status = status_stub.GetModelStatus(status_request, timeout=30)
    assert [(s.version, s.state) for s in status.model_version_status] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]


def _wrong_dtype():
    x = toy_model.random_inputs(1)
    x["frames"] = x["frames"].astype(np.float32)
    return _request(x)


def _wrong_shape():
    x = toy_model.random_inputs(1)
    x["long_frames"] = x["long_frames"][:, :3]
    return _request(x)


def _missing():
    x = toy_model.random_inputs(1)
    del x["landmarks"]
    return _request(x)


@pytest.mark.parametrize("make, code", [
    (_wrong_dtype, grpc.StatusCode.INVALID_ARGUMENT),
    (_wrong_shape, grpc.StatusCode.INVALID_ARGUMENT),
    (_missing, grpc.StatusCode.INVALID_ARGUMENT),
    (lambda: _request(toy_model.random_inputs(1), signature="nope"), grpc.StatusCode.FAILED_PRECONDITION),
    (lambda: _request(toy_model.random_inputs(1), version=9), grpc.StatusCode.NOT_FOUND),
], ids=["wrong dtype", "wrong shape", "missing input", "unknown signature", "unknown version"])
def test_bad_requests_get_status_codes(channel, toy_in_process, make, code):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(make(), timeout=30)
    assert err.value.code() == code
    assert err.value.details()
    good = toy_model.random_inputs(1, seed=5)
    response = stub.Predict(_request(good), timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["probabilities"]),
                               toy_in_process(good)["probabilities"], atol=1e-5, rtol=0)


def test_oversized_request_is_refused_and_server_stays_up(channel, toy_server):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    x = toy_model.random_inputs(1)
    request = _request(x)
    # The fixture's limit is 8 MiB: a 9 MiB tensor is refused by gRPC itself.
    request.inputs["padding"].CopyFrom(tf.make_tensor_proto(np.zeros(9 << 20, np.uint8)))
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stub.Predict(_request(x), timeout=30).outputs["probabilities"].dtype == tf.float32.as_datatype_enum
