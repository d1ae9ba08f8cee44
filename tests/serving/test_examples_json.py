"""REST classify/regress bodies -> tf.Example protos, by the rules of TF Serving's REST API doc."""

import base64

import pytest
from tensorflow.core.example import example_pb2

from vtcaps_tf.serving.errors import ServingError
from vtcaps_tf.serving.inference import input_from_json, serialized_examples


def test_feature_kinds_follow_the_json_types():
    name, proto = input_from_json({"signature_name": "s", "examples": [{
        "f": [1.5, 2.0], "i": [3, -4], "b": True, "s": "caf\u00e9",
        "raw": {"b64": base64.b64encode(b"\x00\xff").decode()}, "empty": []}]})
    assert name == "s"
    features = proto.example_list.examples[0].features.feature
    assert list(features["f"].float_list.value) == [1.5, 2.0]
    assert list(features["i"].int64_list.value) == [3, -4]
    assert list(features["b"].int64_list.value) == [1]
    assert list(features["s"].bytes_list.value) == ["caf\u00e9".encode()]
    assert list(features["raw"].bytes_list.value) == [b"\x00\xff"]
    assert features["empty"].WhichOneof("kind") is None


def test_context_comes_first_and_the_example_wins():
    _, proto = input_from_json({"context": {"x": 1.0, "c": 7}, "examples": [{"x": 2.0}, {}]})
    assert proto.WhichOneof("kind") == "example_list_with_context"
    parsed = [example_pb2.Example.FromString(s) for s in serialized_examples(proto)]
    assert [list(e.features.feature["x"].float_list.value) for e in parsed] == [[2.0], [1.0]]
    assert [list(e.features.feature["c"].int64_list.value) for e in parsed] == [[7], [7]]


@pytest.mark.parametrize("body, fragment", [
    ({"examples": [{"x": [1, 2.5]}]}, "expecting type: int64"),
    ({"examples": [{"x": ["a", 1]}]}, "expecting type: bytes"),
    ({"examples": [{"x": [[1.0]]}]}, "Array"),
    ({"examples": [{"x": {"y": 1}}]}, "Object"),
    ({"examples": [{"x": 2 ** 64}]}, "int64"),
    ({"examples": [{"x": 1e39}]}, "without loss of precision"),
    ({"examples": [{"x": {"b64": "not base64!"}}]}, "base64"),
    ({"examples": [1.0]}, "Example must be JSON object"),
    ({"examples": {"x": 1.0}}, "list"),
    ({"signature_name": 3, "examples": [{}]}, "signature_name"),
    ([1, 2], "JSON object"),
])
def test_bad_features_are_invalid_argument(body, fragment):
    with pytest.raises(ServingError) as err:
        input_from_json(body)
    assert err.value.code == "INVALID_ARGUMENT"
    assert fragment in err.value.message
