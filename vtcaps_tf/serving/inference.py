"""Classify, Regress and MultiInference over serialized tf.Example, as TF Serving runs them.

A classification signature (method `tensorflow/serving/classify`) takes one string input `inputs`
(serialized tf.Example) and gives `classes` [batch, n] strings and/or `scores` [batch, n] floats;
a regression signature (`tensorflow/serving/regress`) gives `outputs` [batch] or [batch, 1]. The
examples come from the gRPC `Input` proto or from REST JSON features (`{"x": 2.0}`), and the
results are the protos of classification.proto / regression.proto; REST prints them as
`{"results": [[[label, score], ...], ...]}` and `{"results": [value, ...]}`.
"""

from __future__ import annotations

import base64
import binascii
import math

import numpy as np

from vtcaps_tf.serving.errors import ServingError, invalid
from vtcaps_tf.serving.servables import DEFAULT_SIGNATURE

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INT64 = np.iinfo(np.int64)


# ---------------------------------------------------------------------------------------------
# examples in: gRPC Input proto or REST JSON


def serialized_examples(input_proto) -> list[bytes]:
    """An `Input` proto -> one serialized tf.Example per example (the context's features first, so
    that the example's own features win when both name one: protobuf merge order)."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        out = [e.SerializeToString() for e in input_proto.example_list.examples]
    elif kind == "example_list_with_context":
        lists = input_proto.example_list_with_context
        context = lists.context.SerializeToString()
        out = [context + e.SerializeToString() for e in lists.examples]
    else:
        out = []
    if not out:
        raise invalid("Input is empty.")
    return out


def input_from_json(request: dict):
    """A REST classify/regress body -> (signature name or None, `Input` proto).

    Features as TF Serving's REST API documents them: a JSON number with a point or exponent
    goes to a float_list, an integer or a boolean to an int64_list, a string or {"b64": ...} to a
    bytes_list; a list holds values of one kind."""
    from tensorflow_serving.apis import input_pb2

    if not isinstance(request, dict):
        raise invalid("the request body must be a JSON object")
    signature_name = request.get("signature_name")
    if signature_name is not None and not isinstance(signature_name, str):
        raise invalid("'signature_name' key must be a string value")
    proto = input_pb2.Input()
    if "context" in request:
        target = proto.example_list_with_context
        _fill_example(request["context"], target.context)
        add = target.examples.add
    else:
        add = proto.example_list.examples.add
    examples = request.get("examples")
    if examples is None:
        raise invalid("key 'examples' is expected and was not found")
    if not isinstance(examples, list):
        raise invalid("expecting 'examples' value to be a list/array")
    if not examples:
        raise invalid("'examples' value is an empty array")
    for example in examples:
        _fill_example(example, add())
    return signature_name or None, proto


def _fill_example(value, example):
    if not isinstance(value, dict):
        raise invalid(f"Example must be JSON object but got JSON {_json_type(value)}")
    for name, content in value.items():
        feature = example.features.feature[name]
        for item in content if isinstance(content, list) else [content]:
            _add_feature_value(name, item, feature)


def _add_feature_value(name, value, feature):
    kind = feature.WhichOneof("kind")

    def want(expected):
        if kind not in (None, expected):
            raise invalid(f"Unexpected element type in feature: {name} expecting type: "
                          f"{kind.replace('_list', '')}")

    if isinstance(value, bool):
        want("int64_list")
        feature.int64_list.value.append(int(value))
    elif isinstance(value, int):
        want("int64_list")
        if not _INT64.min <= value <= _INT64.max:
            raise invalid(f"Feature: {name} has element {value} outside int64. Only int64 is supported.")
        feature.int64_list.value.append(value)
    elif isinstance(value, float):
        want("float_list")
        if math.isfinite(value) and abs(value) > _FLOAT32_MAX:
            raise invalid(f"Cannot convert JSON value: {value} to float without loss of precision.")
        feature.float_list.value.append(value)
    elif isinstance(value, str):
        want("bytes_list")
        feature.bytes_list.value.append(value.encode("utf-8"))
    elif isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str):
        want("bytes_list")
        try:
            feature.bytes_list.value.append(base64.b64decode(value["b64"], validate=True))
        except (binascii.Error, ValueError):
            raise invalid(f"Feature: {name}: unable to base64 decode") from None
    else:
        raise invalid(f"Feature: {name} has element with unexpected JSON type: {_json_type(value)}")


def _json_type(value) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


# ---------------------------------------------------------------------------------------------
# signatures


def _signature_def(servable, name: str | None):
    name = name or DEFAULT_SIGNATURE
    sig = servable.signatures.get(name)
    if sig is None:
        raise invalid(f"No signature was found with the name: {name}")
    return sig


def _example_input(sig, method: str, what: str) -> str:
    """Check `sig` is a `method` signature over serialized examples; return its input's tensor name."""
    if sig.method_name != method:
        raise invalid(f"Expected {what} signature method_name to be {method}. Was: {sig.method_name}")
    if len(sig.inputs) != 1:
        raise invalid("Expected one input Tensor.")
    if "inputs" not in sig.inputs:
        raise ServingError("FAILED_PRECONDITION", f"No {what} inputs found in signature '{sig.name}'")
    return sig.signature_def.inputs["inputs"].name


def classification_signature(servable, name: str | None):
    sig = _signature_def(servable, name)
    tensor = _example_input(sig, CLASSIFY_METHOD, "classification")
    if len(sig.outputs) not in (1, 2):
        raise invalid(f"Expected one or two output Tensors, found {len(sig.outputs)}")
    if not {"classes", "scores"} & set(sig.outputs):
        raise ServingError("FAILED_PRECONDITION", 'Expected classification signature outputs to '
                           'contain at least one of "classes" or "scores".')
    return sig, tensor


def regression_signature(servable, name: str | None):
    sig = _signature_def(servable, name)
    tensor = _example_input(sig, REGRESS_METHOD, "regression")
    if len(sig.outputs) != 1:
        raise invalid("Expected one output Tensor.")
    if "outputs" not in sig.outputs:
        raise ServingError("FAILED_PRECONDITION", f"No regression outputs found in signature '{sig.name}'")
    return sig, tensor


def _run(sig, examples: list[bytes], wanted) -> dict[str, np.ndarray]:
    return sig.run({"inputs": np.array(examples, dtype=object)}, output_filter=wanted)


# ---------------------------------------------------------------------------------------------
# results


def classification_result(sig, examples: list[bytes]):
    """ClassificationResult: per example, one Class per column of `classes`/`scores`."""
    from tensorflow_serving.apis import classification_pb2

    wanted = [k for k in ("classes", "scores") if k in sig.outputs]
    out = _run(sig, examples, wanted)
    n = len(examples)
    classes, scores = out.get("classes"), out.get("scores")
    for key, arr, kind in (("classes", classes, "O"), ("scores", scores, "f")):
        if arr is None:
            continue
        if arr.ndim != 2:
            raise invalid(f"Expected Tensor shape: [batch_size num_classes] but got {list(arr.shape)}")
        if arr.dtype.kind != kind or (kind == "f" and arr.dtype != np.float32):
            raise invalid(f"Expected {key} Tensor of {'DT_STRING' if kind == 'O' else 'DT_FLOAT'}. "
                          f"Got: {arr.dtype.name}")
        if arr.shape[0] != n:
            raise invalid(f"Expected {key} output batch size of {n}. Got: {arr.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid(f"Tensors class and score should match in dim_size(1). Got "
                      f"{classes.shape[1]} vs. {scores.shape[1]}")
    num_classes = (classes if classes is not None else scores).shape[1]
    result = classification_pb2.ClassificationResult()
    for i in range(n):
        row = result.classifications.add()
        for c in range(num_classes):
            cl = row.classes.add()
            if classes is not None:
                label = classes[i, c]
                cl.label = label.decode("utf-8", errors="replace") if isinstance(label, bytes) else str(label)
            if scores is not None:
                cl.score = float(scores[i, c])
    return result


def regression_result(sig, examples: list[bytes]):
    """RegressionResult: one value per example from `outputs` [batch] or [batch, 1] (float32)."""
    from tensorflow_serving.apis import regression_pb2

    arr = _run(sig, examples, ["outputs"])["outputs"]
    n = len(examples)
    if not (arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1)):
        raise invalid(f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
                      f"but got {list(arr.shape)}")
    if arr.shape[0] != n:
        raise invalid(f"Input batch size did not match output batch size: {n} vs. {arr.shape[0]}")
    if arr.dtype != np.float32:
        raise invalid(f"Expected output Tensor of DT_FLOAT.  Got: {arr.dtype.name}")
    result = regression_pb2.RegressionResult()
    for value in arr.reshape(-1):
        result.regressions.add().value = float(value)
    return result


def _model_spec(spec, name: str, version: int, signature_name: str | None):
    from vtcaps_tf.serving.responses import model_spec_proto

    spec.CopyFrom(model_spec_proto(name, version, signature_name or DEFAULT_SIGNATURE))


def classify(manager, name, version, label, signature_name, input_proto):
    """ClassificationResponse for a ClassificationRequest's parts."""
    from tensorflow_serving.apis import classification_pb2

    servable = manager.get(name, version, label)
    sig, _ = classification_signature(servable, signature_name)
    response = classification_pb2.ClassificationResponse()
    response.result.CopyFrom(classification_result(sig, serialized_examples(input_proto)))
    _model_spec(response.model_spec, name, servable.version, sig.name)
    return response


def regress(manager, name, version, label, signature_name, input_proto):
    """RegressionResponse for a RegressionRequest's parts."""
    from tensorflow_serving.apis import regression_pb2

    servable = manager.get(name, version, label)
    sig, _ = regression_signature(servable, signature_name)
    response = regression_pb2.RegressionResponse()
    response.result.CopyFrom(regression_result(sig, serialized_examples(input_proto)))
    _model_spec(response.model_spec, name, servable.version, sig.name)
    return response


def multi_inference(manager, request):
    """MultiInferenceResponse: each task (classify or regress) of one model over the same examples.

    As TF Serving: one model for all tasks, each signature once, all reading the same input tensor.
    Each task's signature runs on its own (TF Serving fetches them in one session run; the
    results are the same)."""
    from tensorflow_serving.apis import inference_pb2

    if not request.tasks:
        raise invalid("MultiInferenceRequest must have at least one task")
    names = {t.model_spec.name for t in request.tasks}
    if "" in names:
        raise invalid("Found ModelSpec with an empty model name.")
    if len(names) != 1:
        raise invalid("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
    first = request.tasks[0].model_spec
    version = first.version.value if first.HasField("version") else None
    servable = manager.get(first.name, version, first.version_label or None)
    runs, seen, input_tensor = [], set(), None
    for task in request.tasks:
        signature_name = task.model_spec.signature_name or DEFAULT_SIGNATURE
        if signature_name in seen:
            raise invalid(f"Duplicate evaluation of signature: {signature_name}")
        seen.add(signature_name)
        if signature_name not in servable.signatures:
            raise invalid(f"Requested signature not found in model graph: {signature_name}")
        if task.method_name == CLASSIFY_METHOD:
            sig, tensor = classification_signature(servable, signature_name)
            run = classification_result
        elif task.method_name == REGRESS_METHOD:
            sig, tensor = regression_signature(servable, signature_name)
            run = regression_result
        else:
            raise ServingError("UNIMPLEMENTED", f"Unsupported signature method_name: {task.method_name}")
        if input_tensor is not None and tensor != input_tensor:
            raise invalid("Input tensor must be the same for all Signatures.")
        input_tensor = tensor
        runs.append((task, sig, run))
    examples = serialized_examples(request.input)
    response = inference_pb2.MultiInferenceResponse()
    for task, sig, run in runs:
        entry = response.results.add()
        result = run(sig, examples)
        (entry.classification_result if task.method_name == CLASSIFY_METHOD
         else entry.regression_result).CopyFrom(result)
        _model_spec(entry.model_spec, first.name, servable.version, task.model_spec.signature_name)
    return response


def classification_json(result) -> dict:
    from vtcaps_tf.serving.json_codec import float32_values

    return {"results": [[[c.label, score] for c, score in
                         zip(row.classes, float32_values(np.array([c.score for c in row.classes])).tolist())]
                        for row in result.classifications]}


def regression_json(result) -> dict:
    from vtcaps_tf.serving.json_codec import float32_values

    return {"results": float32_values(np.array([r.value for r in result.regressions])).tolist()}
