"""Run an exported `model.tflite` (`vtcaps_tf.export.tflite`) as the SavedModel's `serving_default`.

`TFLiteModel(path)` takes the signature's inputs ({`frames`: uint8 [B,N,S,S,3], `landmarks`:
float32 [B,N,68,2]}, any batch size) and returns its outputs: `probabilities` and
`capsule_lengths` float32 [B,C], and `classes` [B,C] (bytes, as the SavedModel's string tensor
reads in numpy), from the class names in `model.tflite.json` beside the model.

The interpreter is the TFLite runtime's (`ai-edge-litert`, no TensorFlow needed) when it is
installed, else TensorFlow's `tf.lite.Interpreter`. A model holds a pool of interpreters (a
thread-safe queue): concurrent calls each take one, and wait when all are busy. An interpreter
is not safe to share between threads; the pool is what makes one model safe to share.
"""

from __future__ import annotations

import json
import os
import queue
from collections.abc import Mapping

import numpy as np

from vtcaps_tf.errors import UsageError

TFLITE_FILE = "model.tflite"
INFO_FILE = TFLITE_FILE + ".json"  # beside the model: class names, mode, inputs
SIGNATURE = "serving_default"


def interpreter_class():
    """The TFLite interpreter class: the TFLite runtime's, else TensorFlow's."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter


def runtime_name() -> str:
    """Which package runs the models: `ai-edge-litert` or `tensorflow`."""
    return "tensorflow" if interpreter_class().__module__.startswith("tensorflow") else "ai-edge-litert"


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


def op_names(model_content: bytes) -> list[str]:
    """The ops of a TFLite model, read from its flatbuffer (no interpreter, which refuses a model
    with ops it cannot resolve): builtins by name (`CONV_2D`), custom ops by their code
    (`FlexAddV2` for a Select TF op)."""
    schema = _schema()
    model = schema.Model.GetRootAs(model_content, 0)
    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    names = []
    for g in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(g)
        for i in range(subgraph.OperatorsLength()):
            code = model.OperatorCodes(subgraph.Operators(i).OpcodeIndex())
            # Codes past 127 live in BuiltinCode; DeprecatedBuiltinCode holds the small ones.
            number = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            if number == schema.BuiltinOperator.CUSTOM:
                names.append(code.CustomCode().decode())
            else:
                names.append(builtin[number])
    return names


def tflite_path(path: str) -> str:
    """A .tflite file, or the version directory holding `TFLITE_FILE`."""
    return os.path.join(path, TFLITE_FILE) if os.path.isdir(path) else path


def read_info(path: str) -> dict:
    """The `INFO_FILE` beside a .tflite file (or in a version directory)."""
    info_path = tflite_path(path) + ".json"
    try:
        with open(info_path) as f:
            return json.load(f)
    except OSError as err:
        raise UsageError(f"cannot read {info_path!r} (written beside the .tflite model): {err}") from err
    except ValueError as err:
        raise UsageError(f"{info_path!r} is not JSON: {err}") from err


class TFLiteModel:
    """A `model.tflite` answering as the SavedModel's `serving_default` (module docstring).

    `path`: the .tflite file or the version directory holding it; `interpreters`: how many calls
    may run at once; `num_threads`: threads of each interpreter (default: the machine's cores
    shared among the interpreters)."""

    def __init__(self, path: str, interpreters: int = 1, num_threads: int | None = None):
        if int(interpreters) < 1:
            raise ValueError(f"interpreters must be at least 1, got {interpreters}")
        self.path = tflite_path(path)
        self.info = read_info(self.path)
        self.class_names = [str(c) for c in self.info["classes"]]
        self.inputs = {k: (tuple(v["shape"]), np.dtype(v["dtype"])) for k, v in self.info["inputs"].items()}
        try:
            with open(self.path, "rb") as f:
                content = f.read()
        except OSError as err:
            raise UsageError(f"cannot read the TFLite model {self.path!r}: {err}") from err
        if num_threads is None:
            num_threads = max(1, (os.cpu_count() or 1) // int(interpreters))
        interpreter = interpreter_class()
        self._pool: queue.Queue = queue.Queue()
        for _ in range(int(interpreters)):
            self._pool.put(interpreter(model_content=content, num_threads=num_threads)
                           .get_signature_runner(self.info.get("signature", SIGNATURE)))

    @property
    def mode(self) -> str:
        return self.info["mode"]

    def _check(self, inputs: Mapping) -> dict[str, np.ndarray]:
        missing = sorted(set(self.inputs) - set(inputs))
        if missing:
            raise ValueError(f"inputs lack {missing}; the model takes {sorted(self.inputs)}")
        out, batch = {}, None
        for name, (shape, dtype) in self.inputs.items():
            value = np.asarray(inputs[name])
            if not np.can_cast(value.dtype, dtype, "same_kind"):
                raise ValueError(f"input {name!r} is {value.dtype}, the model takes {dtype}")
            if value.ndim != len(shape) or value.shape[1:] != tuple(shape[1:]):
                raise ValueError(f"input {name!r} has shape {list(value.shape)}, the model takes "
                                 f"[B, {', '.join(map(str, shape[1:]))}]")
            if batch is not None and value.shape[0] != batch:
                raise ValueError(f"inputs have different batch sizes ({batch} and {value.shape[0]})")
            batch = value.shape[0]
            out[name] = np.ascontiguousarray(value, dtype=dtype)
        return out

    def predict(self, inputs: Mapping) -> dict[str, np.ndarray]:
        """The signature's outputs for a dict of inputs (module docstring)."""
        arrays = self._check(inputs)
        runner = self._pool.get()
        try:
            result = runner(**arrays)
            out = {k: np.array(v) for k, v in result.items()}
        finally:
            self._pool.put(runner)
        batch = next(iter(arrays.values())).shape[0]
        out["classes"] = np.array([[c.encode() for c in self.class_names]] * batch, dtype=object
                                  ).reshape(batch, len(self.class_names))
        return out

    def __call__(self, **inputs) -> dict[str, np.ndarray]:
        """`model(frames=..., landmarks=...)`, as the SavedModel's signature is called."""
        return self.predict(inputs)
