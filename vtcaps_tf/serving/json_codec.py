"""Request/response JSON <-> numpy, as TF Serving's REST API encodes tensors.

`loads` is a JSON decoder that turns every all-numeric nested array straight into a numpy array
with one vectorised parse: a video clip is millions of numbers, which the plain `json` module plus
`np.asarray` decode several times slower (about 0.9 s against 0.1 s for one `small` clip here). Anything it cannot prove well formed and rectangular
(NaN tokens, strings, objects, ragged lists, bad syntax) goes to the standard decoder, so the
result and the errors are the standard ones.
"""

from __future__ import annotations

import base64
import json
import json.decoder
import json.scanner
import re
import warnings

import numpy as np

from vtcaps_tf.serving.errors import invalid

# Characters that can make up a nested array of JSON numbers.
_NUMERIC_RUN = re.compile(rb"[][, \t\r\n0-9eE+.-]*")
_SKELETON_DELETE = b"0123456789eE+-. \t\r\n"
_TRAILING = b", \t\r\n"
_NUMBER_CHARS = np.zeros(256, bool)
_NUMBER_CHARS[np.frombuffer(b"0123456789eE+-.", np.uint8)] = True
_BRACKETS_TO_SPACES = bytes.maketrans(b"[]", b"  ")
_SIGN_POINT_EXP = np.zeros(256, bool)
_SIGN_POINT_EXP[np.frombuffer(b"+-.eE", np.uint8)] = True
# Arrays shorter than this go through the standard decoder (not worth the numpy set-up).
_FAST_MIN_CHARS = 256
_INT64 = np.iinfo(np.int64)
_STANDARD = object()  # "leave this array to the standard decoder"


class _ArrayDecoder(json.JSONDecoder):
    """json.JSONDecoder whose arrays of numbers come back as numpy arrays (int64 or float64).

    `data` is the body's bytes, ASCII, so that positions in it and in the text agree."""

    def __init__(self, data: bytes):
        super().__init__()
        self.parse_array = self._parse_array
        self.scan_once = json.scanner.py_make_scanner(self)
        self._standard = json.JSONDecoder()  # the C scanner
        self._data = data

    def _parse_array(self, s_and_end, scan_once):
        string, end = s_and_end
        fast = _fast_numeric_array(self._data, end - 1)
        if fast is _STANDARD:
            # A long numeric-looking array the fast path refused (ragged, NaN, bad syntax): parse
            # it whole in C, not element by element here, which would rescan it once per sub-array.
            return self._standard.raw_decode(string, end - 1)
        if fast is not None:
            return fast
        return json.decoder.JSONArray(s_and_end, scan_once)


def loads(text):
    """Parse a request body (str or bytes). Raises json.JSONDecodeError / UnicodeDecodeError."""
    if isinstance(text, str):
        data = text.encode("utf-8")
    else:
        data = bytes(text)
        text = data.decode("utf-8")
    if not data.isascii():
        return json.loads(text)  # non-ASCII text: byte and character positions differ
    return _ArrayDecoder(data).decode(text)


def _fast_numeric_array(data: bytes, start: int):
    """(ndarray, end) for the rectangular numeric array at data[start] == '['; None when it does
    not start as a long numeric array; _STANDARD when it does but cannot be taken."""
    run = _NUMERIC_RUN.match(data, start)
    if run.end() - start < _FAST_MIN_CHARS:
        return None
    result = _parse_numeric_run(data, start, run.end())
    return _STANDARD if result is None else result


def _parse_numeric_run(data: bytes, start: int, run_end: int):
    # Usually the array ends at the run's last bracket (a key or '}' follows): try that first, and
    # count brackets only when the structure check says it does not ("[1,2],[3,4]" in a list).
    raw = data[start:run_end].rstrip(_TRAILING)
    parsed = _structure(raw)
    if parsed is None:
        buf = np.frombuffer(raw, np.uint8)
        brackets = np.flatnonzero((buf & 0xF9) == 0x59)  # '[' or ']' (or 'Y', '_': not in a run)
        depth = np.cumsum(np.where(buf[brackets] == 91, 1, -1))
        closed = np.flatnonzero(depth == 0)
        if closed.size == 0:
            return None
        raw = raw[:int(brackets[closed[0]]) + 1]
        parsed = _structure(raw)
        if parsed is None:
            return None
    shape, count = parsed
    stop = len(raw)
    buf = np.frombuffer(raw, np.uint8)
    # numpy stops reading at a number separated by blanks only ("1 2"), so the count check below
    # catches one anywhere but in the last slot: check that slot here.
    chars = _NUMBER_CHARS[buf[raw.rfind(b",") + 1:]]
    if int(chars[0]) + int(np.count_nonzero(chars[1:] & ~chars[:-1])) != 1:
        return None
    is_float = b"." in raw or b"e" in raw or b"E" in raw
    if (is_float or b"-" in raw or b"+" in raw) and not _json_number_marks_ok(buf):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns on trailing junk; the count check catches it
        try:
            values = np.fromstring(raw.translate(_BRACKETS_TO_SPACES),
                                   dtype=np.float64 if is_float else np.int64, sep=",")
        except ValueError:
            return None
    if values.size != count:
        return None
    if not is_float and values.size and (values.max() == _INT64.max or values.min() == _INT64.min):
        return None  # possibly saturated: leave big integers to the standard decoder
    return values.reshape(shape), start + stop


def _structure(raw: bytes):
    """(shape, size) when `raw`'s brackets and commas are those of one rectangular array."""
    if not raw.endswith(b"]"):
        return None
    skeleton = raw.translate(None, _SKELETON_DELETE).decode("latin-1")
    shape = _shape_from_skeleton(skeleton)
    if shape is None or _skeleton_of(shape) != skeleton:
        return None
    return shape, int(np.prod(shape))


def _is_digit(v):
    return (v >= 48) & (v <= 57)


def _json_number_marks_ok(buf) -> bool:
    """Signs, points and exponents sit where JSON allows them ("-", "+1", ".5", "1.", "1e", "1-2"
    are refused; numpy would read some of them). `buf` starts with '[' and ends with ']'."""
    at = np.flatnonzero(_SIGN_POINT_EXP[buf])
    c, before, after = buf[at], buf[at - 1], buf[at + 1]
    exp_before = (before == 101) | (before == 69)
    ok = np.where(c == 45, _is_digit(after) & ~_is_digit(before) & (before != 46),  # '-'
         np.where(c == 43, exp_before & _is_digit(after),  # '+'
         np.where(c == 46, _is_digit(before) & _is_digit(after),  # '.'
                  _is_digit(before) & (_is_digit(after) | (after == 43) | (after == 45)))))  # e E
    return bool(ok.all())


def _shape_from_skeleton(skeleton: str):
    """Shape read off the first element at every depth of a bracket/comma skeleton such as '[[,],[,]]'."""
    rank = len(skeleton) - len(skeleton.lstrip("["))
    if rank == 0:
        return None
    leaf_end = skeleton.find("]")
    if leaf_end < 0 or "[" in skeleton[rank:leaf_end]:
        return None
    dims = [leaf_end - rank + 1]
    child = "[" + "," * (dims[0] - 1) + "]"
    for level in range(rank - 2, -1, -1):
        pos = level + 1 + len(child)
        count = 1
        step = "," + child
        while skeleton.startswith(step, pos):
            pos += len(step)
            count += 1
        dims.insert(0, count)
        child = "[" + ",".join([child] * count) + "]"
    return tuple(dims)


def _skeleton_of(shape) -> str:
    text = "[" + "," * (shape[-1] - 1) + "]"
    for dim in reversed(shape[:-1]):
        text = "[" + ",".join([text] * dim) + "]"
    return text


# ---------------------------------------------------------------------------------------------
# JSON values -> typed numpy tensors


def is_b64(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def to_tensor(value, dtype: np.dtype, name: str) -> np.ndarray:
    """A decoded JSON value -> numpy array of `dtype`, with TF Serving's rules and clear errors."""
    dtype = np.dtype(dtype)
    if dtype.kind in ("S", "O", "U"):
        return _string_tensor(value, name)
    if isinstance(value, np.ndarray):
        arr = value
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                arr = np.asarray(value)
            except ValueError:
                raise invalid(f"input '{name}': nested lists are not rectangular (ragged shape)") from None
    if arr.dtype == object:
        raise invalid(f"input '{name}': nested lists are not rectangular or mix types")
    kind = arr.dtype.kind
    if kind in ("U", "S"):
        raise invalid(f"input '{name}' expects {dtype.name} numbers, got strings")
    if dtype.kind == "b":
        if kind != "b":
            raise invalid(f"input '{name}' expects booleans (true/false), got {arr.dtype.name} values")
        return arr.astype(np.bool_)
    if kind == "b":
        raise invalid(f"input '{name}' expects {dtype.name} numbers, got booleans")
    if dtype.kind in ("i", "u"):
        if kind == "f":
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.floor(arr)):
                raise invalid(f"input '{name}' expects integer values ({dtype.name}), "
                              f"got non-integer numbers")
        info = np.iinfo(dtype)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise invalid(f"input '{name}': values out of range for {dtype.name} "
                          f"[{info.min}, {info.max}]: min {arr.min()}, max {arr.max()}")
        return arr.astype(dtype)
    return arr.astype(dtype)


def _string_tensor(value, name: str) -> np.ndarray:
    def convert(v):
        if isinstance(v, list):
            return [convert(x) for x in v]
        if isinstance(v, np.ndarray):
            raise invalid(f"input '{name}' expects strings, got numbers")
        if is_b64(v):
            try:
                return base64.b64decode(v["b64"], validate=True)
            except (ValueError, TypeError) as err:
                raise invalid(f"input '{name}': bad base64 in {{\"b64\": ...}}: {err}") from None
        if isinstance(v, str):
            return v.encode("utf-8")
        raise invalid(f"input '{name}' expects strings or {{\"b64\": ...}} objects, "
                      f"got {type(v).__name__}")

    converted = convert(value)
    shape = []
    probe = converted
    while isinstance(probe, list):
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    out = np.empty(tuple(shape), dtype=object)

    def walk(x, index):
        if len(index) == len(shape):
            if isinstance(x, list):
                raise invalid(f"input '{name}': nested lists are not rectangular")
            out[tuple(index)] = x
            return
        if not isinstance(x, list) or len(x) != shape[len(index)]:
            raise invalid(f"input '{name}': nested lists are not rectangular")
        for i, y in enumerate(x):
            walk(y, index + [i])

    walk(converted, [])
    return out


# ---------------------------------------------------------------------------------------------
# numpy outputs -> JSON values


def from_tensor(arr: np.ndarray, name: str):
    """A numpy output -> JSON-ready value; strings as text, or {"b64"} when the name ends in _bytes."""
    if arr.dtype.kind in ("S", "O"):
        binary = name.endswith("_bytes")

        def enc(b):
            if isinstance(b, str):
                b = b.encode("utf-8")
            if binary:
                return {"b64": base64.b64encode(b).decode("ascii")}
            return b.decode("utf-8", errors="replace")

        return np.vectorize(enc, otypes=[object])(arr).tolist() if arr.size else arr.tolist()
    if arr.dtype in (np.float32, np.float16):
        return float32_values(arr).tolist()
    return arr.tolist()


def float32_values(arr: np.ndarray) -> np.ndarray:
    """float64 array holding the decimals TF Serving prints for float32 values.

    TF Serving writes a float with six significant digits when that reads back as the same float,
    otherwise with nine (json_tensor.cc WriteDecimal): 0.2f is 0.2 and 1/3f is 0.333333343, not
    the float64 expansions 0.20000000298023224 and 0.3333333432674408. Parsed, the numbers are
    TF Serving's to the last bit."""
    flat = np.asarray(arr, np.float32).reshape(-1)
    wide = flat.astype(np.float64).tolist()
    out = np.array([float("%.6g" % v) for v in wide], np.float64)
    finite = np.isfinite(flat)
    for i in np.flatnonzero(finite & (out.astype(np.float32) != flat)):
        out[i] = float("%.9g" % wide[i])
    return out.reshape(np.shape(arr))


def dumps(obj) -> bytes:
    """JSON body bytes; NaN/Infinity written as TF Serving writes them."""
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")
