"""The one Predict path of both APIs, as TF Serving builds it: gRPC hands its `PredictRequest`
here, and REST turns its JSON into a `PredictRequest` first (`predict_request`), so the version
lookup, the dtype checks, the output filter, the model call (batched or not) and the errors are
the same code for both.
"""

from __future__ import annotations

import numpy as np

from vtcaps_tf.serving.errors import invalid


def _spec_args(spec):
    if not spec.name:
        raise invalid("Missing ModelSpec name")
    version = spec.version.value if spec.HasField("version") else None
    return spec.name, version, spec.version_label or None


def request_inputs(signature, request) -> dict[str, np.ndarray]:
    """The request's TensorProtos -> numpy arrays, each of the dtype its signature input has."""
    import tensorflow as tf

    signature.check_inputs(request.inputs)
    inputs = {}
    for key, proto in request.inputs.items():
        want = signature.inputs[key].dtype
        expected = tf.string if want == object else tf.as_dtype(want)
        try:
            got = tf.dtypes.as_dtype(proto.dtype)
        except TypeError:
            raise invalid(f"input '{key}': unknown dtype enum {proto.dtype}") from None
        if got != expected:
            raise invalid(f"Expects arg '{key}' to be {expected.name} but {got.name} is provided")
        try:
            inputs[key] = tf.make_ndarray(proto)
        except Exception as err:  # noqa: BLE001 - a malformed TensorProto of any kind
            raise invalid(f"input '{key}': malformed TensorProto: {str(err).strip()[:200]}") from None
    return inputs


def run_predict(servable, request):
    """(signature, outputs) of `request` on a loaded `servable` (warm-up replays this too)."""
    signature = servable.signature(request.model_spec.signature_name or None)
    outputs = signature.run(request_inputs(signature, request),
                            output_filter=list(request.output_filter) or None)
    return signature, outputs


def predict(manager, request):
    """(servable, signature, {output name: array}) for a `PredictRequest`."""
    name, version, label = _spec_args(request.model_spec)
    servable = manager.get(name, version, label)
    signature, outputs = run_predict(servable, request)
    return servable, signature, outputs


def predict_response(servable, signature, outputs):
    """The `PredictResponse` gRPC answers with (values in the typed fields, as TF Serving)."""
    from tensorflow_serving.apis import predict_pb2

    from vtcaps_tf.serving.responses import model_spec_proto

    response = predict_pb2.PredictResponse()
    response.model_spec.CopyFrom(model_spec_proto(servable.name, servable.version, signature.name))
    for key, value in outputs.items():
        as_proto_field(np.asarray(value), response.outputs[key])
    return response


def predict_request(model_name: str, version: int, signature_name: str | None,
                    inputs: dict[str, np.ndarray]):
    """The `PredictRequest` for decoded REST inputs, pinned to `version` (the one whose signature
    read the JSON, so a version switch in between cannot change the signature)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.version.value = version
    if signature_name:
        request.model_spec.signature_name = signature_name
    for key, arr in inputs.items():
        try:
            request.inputs[key].CopyFrom(tf.make_tensor_proto(arr))
        except (TypeError, ValueError) as err:
            raise invalid(f"input '{key}': {err}") from None
    return request


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
