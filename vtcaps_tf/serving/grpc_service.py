"""TF Serving's gRPC API: PredictionService (Predict, Classify, Regress, MultiInference,
GetModelMetadata) and ModelService (GetModelStatus, HandleReloadConfigRequest), on the
tensorflow-serving-api protos, so that TF Serving's own Python client
(`prediction_service_pb2_grpc.PredictionServiceStub`) works unchanged.
"""

from __future__ import annotations

import concurrent.futures
import logging

import grpc
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     inference_pb2, model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

from vtcaps_tf.serving import inference, predictor, responses
from vtcaps_tf.serving.errors import ServingError, invalid
from vtcaps_tf.serving.metrics import track
from vtcaps_tf.serving.servables import ModelManager

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
    """`metrics`: the server's `ServingMetrics` (None: nothing recorded)."""

    def __init__(self, manager: ModelManager, metrics=None):
        self.manager = manager
        self.metrics = metrics

    def _track(self, model_spec, api: str):
        return track(self.metrics, model_spec.name, api, "GRPC")

    def Predict(self, request, context):  # noqa: N802 - gRPC method name
        try:
            with self._track(request.model_spec, "predict"):
                return predictor.predict_response(*predictor.predict(self.manager, request))
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

    def Classify(self, request, context):  # noqa: N802 - gRPC method name
        try:
            with self._track(request.model_spec, "classify"):
                name, version, label = _spec_args(request.model_spec)
                return inference.classify(self.manager, name, version, label,
                                          request.model_spec.signature_name or None, request.input)
        except ServingError as err:
            _abort(context, err)

    def Regress(self, request, context):  # noqa: N802 - gRPC method name
        try:
            with self._track(request.model_spec, "regress"):
                name, version, label = _spec_args(request.model_spec)
                return inference.regress(self.manager, name, version, label,
                                         request.model_spec.signature_name or None, request.input)
        except ServingError as err:
            _abort(context, err)

    def MultiInference(self, request, context):  # noqa: N802 - gRPC method name
        try:
            name = request.tasks[0].model_spec.name if request.tasks else ""
            with track(self.metrics, name, "multi_inference", "GRPC"):
                return inference.multi_inference(self.manager, request)
        except ServingError as err:
            _abort(context, err)


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


def parse_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """TF Serving's --grpc_channel_arguments, `key=value,key=value` -> gRPC options (integer values
    as integers)."""
    options = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"gRPC channel argument {item!r} is not key=value")
        value = value.strip()
        options.append((key.strip(), int(value) if value.lstrip("-").isdigit() else value))
    return options


def _prediction_methods():
    """PredictionService's methods: {name: (request class, response class)}."""
    return {"Predict": (predict_pb2.PredictRequest, predict_pb2.PredictResponse),
            "Classify": (classification_pb2.ClassificationRequest, classification_pb2.ClassificationResponse),
            "Regress": (regression_pb2.RegressionRequest, regression_pb2.RegressionResponse),
            "MultiInference": (inference_pb2.MultiInferenceRequest, inference_pb2.MultiInferenceResponse),
            "GetModelMetadata": (get_model_metadata_pb2.GetModelMetadataRequest,
                                 get_model_metadata_pb2.GetModelMetadataResponse)}


def _model_methods():
    return {"GetModelStatus": (get_model_status_pb2.GetModelStatusRequest,
                               get_model_status_pb2.GetModelStatusResponse),
            "HandleReloadConfigRequest": (model_management_pb2.ReloadConfigRequest,
                                          model_management_pb2.ReloadConfigResponse)}


class _Malformed:
    """A request body that is not a serialized request message."""


def _lenient_handlers(service: str, servicer, methods):
    """The service's handlers, as the generated `add_*Servicer_to_server` registers them, except
    that a body that does not parse is answered INVALID_ARGUMENT by the method rather than
    INTERNAL by gRPC's own deserializer: a malformed request is the client's error."""
    from google.protobuf.message import DecodeError

    def parse(request_class):
        def from_bytes(data):
            try:
                return request_class.FromString(data)
            except DecodeError:
                return _Malformed()
        return from_bytes

    def guarded(method, request_class):
        def call(request, context):
            if isinstance(request, _Malformed):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"malformed request: not a serialized {request_class.DESCRIPTOR.full_name}")
            return method(request, context)
        return call

    handlers = {name: grpc.unary_unary_rpc_method_handler(
        guarded(getattr(servicer, name), request), request_deserializer=parse(request),
        response_serializer=response.SerializeToString) for name, (request, response) in methods.items()}
    return grpc.method_handlers_generic_handler(service, handlers)


def make_grpc_server(manager: ModelManager, address: str, max_message_bytes: int,
                     max_workers: int = 16, channel_arguments=(), socket_path: str | None = None,
                     metrics=None):
    """A started-ready grpc.Server with both services; returns (server, bound port).

    `channel_arguments` are extra gRPC options; `socket_path` also binds a Unix socket there."""
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="vtcaps-grpc"),
        options=[("grpc.max_receive_message_length", max_message_bytes),
                 ("grpc.max_send_message_length", -1),
                 ("grpc.so_reuseport", 0), *channel_arguments])
    server.add_generic_rpc_handlers((
        _lenient_handlers("tensorflow.serving.PredictionService", PredictionService(manager, metrics),
                          _prediction_methods()),
        _lenient_handlers("tensorflow.serving.ModelService", ModelService(manager), _model_methods())))
    port = server.add_insecure_port(address) if address else None
    if port == 0:
        raise OSError(f"could not bind gRPC to {address}")
    if socket_path and server.add_insecure_port(f"unix:{socket_path}") == 0:
        raise OSError(f"could not bind gRPC to the Unix socket {socket_path}")
    return server, port
