"""The fast JSON decoder gives exactly what json.loads + np.asarray give, and the standard errors."""

import json

import numpy as np
import pytest

from vtcaps_tf.serving import json_codec
from vtcaps_tf.serving.errors import ServingError


def _same(text):
    got = json_codec.loads(text)
    want = json.loads(text)
    return got, want


@pytest.mark.parametrize("shape", [(300,), (2, 200), (3, 4, 5, 6), (1, 2, 8, 8, 3)])
@pytest.mark.parametrize("kind", ["uint8", "int", "float"])
@pytest.mark.parametrize("indent", [None, 1])
def test_numeric_arrays_decode_to_equal_numpy(shape, kind, indent):
    rng = np.random.default_rng(0)
    if kind == "uint8":
        arr = rng.integers(0, 256, shape)
    elif kind == "int":
        arr = rng.integers(-10**12, 10**12, shape)
    else:
        arr = rng.normal(size=shape) * 10.0 ** rng.integers(-20, 20, shape)
    text = json.dumps({"inputs": {"x": arr.tolist(), "name": "a[1,2]"}, "more": [1, 2]}, indent=indent)
    got, want = _same(text)
    x = got["inputs"]["x"]
    assert isinstance(x, np.ndarray) and x.shape == shape
    np.testing.assert_array_equal(x, np.asarray(want["inputs"]["x"]))
    assert got["inputs"]["name"] == "a[1,2]" and list(got["more"]) == [1, 2]


@pytest.mark.parametrize("inner", [
    "[[1,2],[3]]",  # ragged
    "[[1,2,3],[4]]",  # ragged with the right total count
    "[[1,2],3]",  # mixed depth
    "[1,NaN,Infinity,-Infinity]",  # tokens numpy does not parse here
    "[[1,2],[true,false]]",
    '[[1,2],["a","b"]]',
    "[]",
    "[[],[]]",
    "[99999999999999999999, 1]",  # beyond int64: left to the json module
    "[-9223372036854775808, 9223372036854775807]",
])
def test_unusual_arrays_match_json_module(inner):
    padded = inner[0] + " " * 300 + inner[1:]  # long enough for the fast path to try
    got, want = _same('{"v": %s}' % padded)
    assert json.dumps(np.asarray(got["v"]).tolist() if isinstance(got["v"], np.ndarray) else got["v"]) \
        == json.dumps(want["v"])


@pytest.mark.parametrize("bad", ["[1,,2]", "[1 2]", "[1,2,]", "[[1,2][3,4]]", "[1.2.3, 4]", "[-, 1]",
                                 "[1, 2", "[1e, 2]", "[+1, 2]", "[.5, 1]", "[1., 2]", "[1-2, 3]", "[--1, 2]", "[1e+, 2]", "[1.e5, 2]"])
def test_malformed_arrays_raise_json_errors(bad):
    padded = bad[0] + " " * 300 + bad[1:]
    with pytest.raises(json.JSONDecodeError):
        json.loads(padded)  # the reference agrees that it is malformed
    with pytest.raises(json.JSONDecodeError):
        json_codec.loads(padded)


def test_ragged_big_array_with_nan_decodes_like_json_module():
    rows = [[float(i)] * (3 + i % 2) for i in range(2000)] + [[float("nan")]]
    text = json.dumps({"inputs": {"x": rows}})
    got = json_codec.loads(text)["inputs"]["x"]
    assert len(got) == len(rows) and got[1] == rows[1] and np.isnan(got[-1][0])


def test_to_tensor_rules():
    assert json_codec.to_tensor(np.array([1.0, 2.0]), np.uint8, "x").dtype == np.uint8
    with pytest.raises(ServingError, match="integer"):
        json_codec.to_tensor(np.array([1.5]), np.uint8, "x")
    with pytest.raises(ServingError, match="out of range"):
        json_codec.to_tensor([256], np.uint8, "x")
    with pytest.raises(ServingError, match="strings"):
        json_codec.to_tensor(["a"], np.float32, "x")
    with pytest.raises(ServingError, match="rectangular"):
        json_codec.to_tensor([[1, 2], [3]], np.float32, "x")
    strings = json_codec.to_tensor([{"b64": "AP8="}, "é"], object, "s")
    assert strings.tolist() == [b"\x00\xff", "é".encode()]
    with pytest.raises(ServingError, match="rectangular"):
        json_codec.to_tensor([["a"], "b"], object, "s")


def test_outputs_named_bytes_are_base64():
    arr = np.array([b"\x00\xff", b"ok"], dtype=object)
    assert json_codec.from_tensor(arr, "image_bytes") == [{"b64": "AP8="}, {"b64": "b2s="}]
    assert json_codec.from_tensor(np.array([b"ok"], dtype=object), "classes") == ["ok"]


def test_float32_outputs_print_as_tf_serving_prints_them():
    """Six significant digits when they read back as the same float32, else nine (TF Serving's
    WriteDecimal): worked by hand from the float32 values."""
    values = np.array([0.2, 1 / 3, 3.0, 3.5, 9e6, 3e-5, 16777217.0, -2.5e-8], np.float32)
    # float32(1/3) = 0.3333333432674408...: "0.333333" reads back as another float32, so nine digits.
    # float32(16777217) = 16777216: "1.67772e+07" does not read back, "16777216" does.
    want = [0.2, 0.333333343, 3.0, 3.5, 9000000.0, 3e-05, 16777216.0, -2.5e-08]
    body = json_codec.dumps({"outputs": json_codec.from_tensor(values, "y")})
    assert json.loads(body) == {"outputs": want}
    specials = json_codec.from_tensor(np.array([np.nan, np.inf, -np.inf], np.float32), "y")
    assert json_codec.dumps(specials) == b"[NaN,Infinity,-Infinity]"
