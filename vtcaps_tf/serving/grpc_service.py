"""TF Serving's gRPC API: PredictionService (Predict, Classify, Regress, MultiInference,
GetModelMetadata) and ModelService (GetModelStatus, HandleReloadConfigRequest), on the
tensorflow-serving-api protos, so that TF Serving's own Python client
(`prediction_service_pb2_grpc.PredictionServiceStub`) works unchanged.
"""

from __future__ import annotations

import concurrent.futures
import logging

import grpc
import numpy as np
from tensorflow_serving.apis import (model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from vtcaps_tf.serving import inference, responses
from vtcaps_tf.serving.errors import ServingError, invalid
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
                as_proto_field(np.asarray(value), response.outputs[key])
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

    def Classify(self, request, context):  # noqa: N802 - gRPC method name
        try:
            name, version, label = _spec_args(request.model_spec)
            return inference.classify(self.manager, name, version, label,
                                      request.model_spec.signature_name or None, request.input)
        except ServingError as err:
            _abort(context, err)

    def Regress(self, request, context):  # noqa: N802 - gRPC method name
        try:
            name, version, label = _spec_args(request.model_spec)
            return inference.regress(self.manager, name, version, label,
                                     request.model_spec.signature_name or None, request.input)
        except ServingError as err:
            _abort(context, err)

    def MultiInference(self, request, context):  # noqa: N802 - gRPC method name
        try:
            return inference.multi_inference(self.manager, request)
        except ServingError as err:
            _abort(context, err)


# numpy dtype kind/size -> the TensorProto field TF Serving's Tensor::AsProtoField fills.
_VALUE_FIELDS = {"f2": "half_val", "f4": "float_val", "f8": "double_val", "i1": "int_val",
                 "i2": "int_val", "i4": "int_val", "i8": "int64_val", "u1": "int_val",
                 "u2": "int_val", "u4": "uint32_val", "u8": "uint64_val", "b1": "bool_val",
                 "c8": "scomplex_val", "c16": "dcomplex_val"}


def as_proto_field(arr: np.ndarray, proto):
    """Fill `proto` (a TensorProto) with `arr` in the typed value fields (float_val, ...), as TF
    Serving's Predict answers, rather than in tensor_content: clients that read `float_val`
    directly (TF Serving's own tests do) see the values."""
    import tensorflow as tf

    proto.Clear()
    if arr.dtype.kind in ("O", "S", "U"):
        proto.dtype = tf.string.as_datatype_enum
        values = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in arr.reshape(-1)]
        proto.string_val.extend(values)
    else:
        proto.dtype = tf.as_dtype(arr.dtype).as_datatype_enum
        key = f"{arr.dtype.kind}{arr.dtype.itemsize}"
        if key not in _VALUE_FIELDS:  # e.g. bfloat16: leave it to TensorFlow's own encoding
            proto.CopyFrom(tf.make_tensor_proto(arr))
            return proto
        flat = arr.reshape(-1)
        if key == "f2":
            flat = flat.view(np.uint16)
        elif arr.dtype.kind == "c":
            flat = np.stack([flat.real, flat.imag], axis=-1).reshape(-1)
        getattr(proto, _VALUE_FIELDS[key]).extend(flat.tolist())
    for size in arr.shape:
        proto.tensor_shape.dim.add().size = size
    return proto


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


def make_grpc_server(manager: ModelManager, address: str, max_message_bytes: int,
                     max_workers: int = 16, channel_arguments=(), socket_path: str | None = None):
    """A started-ready grpc.Server with both services; returns (server, bound port).

    `channel_arguments` are extra gRPC options; `socket_path` also binds a Unix socket there."""
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="vtcaps-grpc"),
        options=[("grpc.max_receive_message_length", max_message_bytes),
                 ("grpc.max_send_message_length", -1),
                 ("grpc.so_reuseport", 0), *channel_arguments])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(manager), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager), server)
    port = server.add_insecure_port(address) if address else None
    if port == 0:
        raise OSError(f"could not bind gRPC to {address}")
    if socket_path and server.add_insecure_port(f"unix:{socket_path}") == 0:
        raise OSError(f"could not bind gRPC to the Unix socket {socket_path}")
    return server, port
