"""TF Serving's gRPC API: PredictionService (Predict, GetModelMetadata) and ModelService
(GetModelStatus, HandleReloadConfigRequest), on the tensorflow-serving-api protos, so that TF
Serving's own Python client (`prediction_service_pb2_grpc.PredictionServiceStub`) works unchanged.
"""

from __future__ import annotations

import concurrent.futures
import logging

import grpc
import numpy as np
from tensorflow_serving.apis import (model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from vtcaps_tf.serving import responses
from vtcaps_tf.serving.errors import ServingError, invalid
from vtcaps_tf.serving.models import ModelManager

log = logging.getLogger(__name__)


def _spec_args(spec):
    version = spec.version.value if spec.HasField("version") else None
    label = spec.version_label or None
    if not spec.name:
        raise invalid("Missing ModelSpec name")
    return spec.name, version, label


def _abort(context, err: ServingError):
    context.abort(getattr(grpc.StatusCode, err.code), err.message)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager: ModelManager):
        self.manager = manager

    def Predict(self, request, context):  # noqa: N802 - gRPC method name
        import tensorflow as tf

        try:
            name, version, label = _spec_args(request.model_spec)
            servable = self.manager.get(name, version, label)
            signature = servable.signature(request.model_spec.signature_name or None)
            signature.check_inputs(request.inputs)
            inputs = {}
            for key, proto in request.inputs.items():
                want = signature.inputs[key].dtype
                got = tf.dtypes.as_dtype(proto.dtype)
                expected = tf.string if want == object else tf.as_dtype(want)
                if got != expected:
                    raise invalid(f"Expects arg '{key}' to be {expected.name} but {got.name} is provided")
                try:
                    inputs[key] = tf.make_ndarray(proto)
                except Exception as err:  # noqa: BLE001 - malformed TensorProto
                    raise invalid(f"input '{key}': malformed TensorProto: {err}") from None
            outputs = signature.run(inputs, output_filter=list(request.output_filter) or None)
            response = predict_pb2.PredictResponse()
            response.model_spec.CopyFrom(responses.model_spec_proto(name, servable.version, signature.name))
            for key, value in outputs.items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
            return response
        except ServingError as err:
            _abort(context, err)

    def GetModelMetadata(self, request, context):  # noqa: N802 - gRPC method name
        try:
            name, version, label = _spec_args(request.model_spec)
            response, _ = responses.metadata_response(self.manager, name, version, label,
                                                      tuple(request.metadata_field))
            return response
        except ServingError as err:
            _abort(context, err)

    def _unimplemented(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "only Predict and GetModelMetadata are served")

    Classify = Regress = MultiInference = _unimplemented


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager: ModelManager):
        self.manager = manager

    def GetModelStatus(self, request, context):  # noqa: N802 - gRPC method name
        try:
            name, version, label = _spec_args(request.model_spec)
            return responses.status_response(self.manager, name, version, label)
        except ServingError as err:
            _abort(context, err)

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802 - gRPC method name
        from vtcaps_tf.serving.config_file import specs_from_proto

        response = model_management_pb2.ReloadConfigResponse()
        try:
            self.manager.reload(specs_from_proto(request.config))
        except (ServingError, ValueError) as err:
            response.status.error_code = 3  # INVALID_ARGUMENT
            response.status.error_message = getattr(err, "message", str(err))
        return response


def make_grpc_server(manager: ModelManager, address: str, max_message_bytes: int,
                     max_workers: int = 16):
    """A started-ready grpc.Server with both services; returns (server, bound port)."""
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="vtcaps-grpc"),
        options=[("grpc.max_receive_message_length", max_message_bytes),
                 ("grpc.max_send_message_length", -1),
                 ("grpc.so_reuseport", 0)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(manager), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind gRPC to {address}")
    return server, port
