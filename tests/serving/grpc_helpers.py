"""A PredictionService call the serving tests share: the request built from named arrays, the
response's outputs as numpy arrays."""

import grpc
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc


def grpc_predict(port: int, model: str, inputs: dict, signature: str | None = None,
                 timeout: float = 60):
    """(outputs as numpy arrays, the response) of a Predict call to 127.0.0.1:`port`."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if signature:
        request.model_spec.signature_name = signature
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=timeout)
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}, response
