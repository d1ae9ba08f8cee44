"""The model `vtcaps predict` and `vtcaps stream` ask: a SavedModel loaded in process, its TFLite
model (`vtcaps export --tflite`) run in process by the TFLite interpreter, or a model behind TF
Serving's REST API. Both read the clip length N, TPN window M and crop size S from the
serving signature (as an `InputContract`), and both are given clips as stored windows - each
face crop with its landmarks, the short clip at an offset - which they turn into inputs with the
contract the training reader uses:

- in process, `serving_default` (or the TFLite model, which takes the same inputs) gets the
  decoded inputs (`InputContract.window_inputs`);
- over REST, each clip goes as one serialized SequenceExample (a record of one clip: the JPEG
  crops and landmarks, `InputContract.example`) to `serve_examples`, base64 in TF Serving's JSON
  (`{"b64": ...}`): a `small` clip is a few hundred KB, not the ~10 MB of its pixels as JSON numbers.

A default export serves 3D-CapsNet only (no `long_frames` input): then M is taken as N, so clips
are cut, held and sent without the TPN window.
"""

from __future__ import annotations

import os

import numpy as np

from vtcaps_tf.apps.options import ModelSource
from vtcaps_tf.data.contract import InputContract
from vtcaps_tf.errors import InputNotFoundError, UsageError

SIGNATURE = "serving_default"
EXAMPLES_SIGNATURE = "serve_examples"
# Keep one REST request body well under a server's limit (a clip's JPEGs as base64 are far below
# its raw pixels, the bound used).
_REST_BODY_BUDGET = 32 << 20
# The input contract as read from a signature; `ClipShape(N, M, S)` still builds one.
ClipShape = InputContract


def clip_shape_from_inputs(inputs: dict) -> InputContract:
    """{name: shape tuple} of serving_default's inputs -> the contract (N, M, S; static shapes).
    Without `long_frames` (a teacher-free export) M is N. A signature no clip fits raises
    UsageError (the model is unusable here)."""
    missing = {"frames", "landmarks"} - set(inputs)
    if missing:
        raise UsageError(f"the model's {SIGNATURE} signature lacks inputs {sorted(missing)}; "
                         f"it has {sorted(inputs)} (an export older than schema version 2 takes "
                         "au_map: export the model again with this version of vtcaps)")
    for name in ("frames", "long_frames"):
        shape = inputs.get(name, ())
        if name not in inputs:
            continue
        if shape is None or len(shape) != 5 or None in shape[1:]:
            raise UsageError(f"input {name!r} needs a static shape [-1, T, S, S, 3], got {shape}")
    frames = inputs["frames"]
    long_frames = inputs.get("long_frames", frames)
    if frames[2] != frames[3] or frames[2:] != long_frames[2:]:
        raise UsageError(f"frames {frames} and long_frames {long_frames} disagree on the crop size")
    return InputContract(frames[1], long_frames[1], frames[2])


def _stack(dicts: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.stack([d[k] for d in dicts]) for k in dicts[0]}


def version_folder(path: str) -> str:
    """A SavedModel folder: `path` itself when it is a version, else the highest version of the
    base path `path` (the folder's own name: 00000123 stays). UsageError when it is neither."""
    from vtcaps_tf.export.versions import SAVED_MODEL_FILES, version_dirs

    if not os.path.isdir(path):
        raise InputNotFoundError(f"no SavedModel folder {path!r}")
    if any(os.path.exists(os.path.join(path, f)) for f in SAVED_MODEL_FILES):
        return path
    folders = version_dirs(path)
    if not folders:
        raise UsageError(f"{path!r} is neither a SavedModel nor a base path with "
                         "integer version folders")
    return os.path.join(path, folders[max(folders)])


class _LocalModel:
    """What the two in-process models share: clips as stored windows -> their `predict`."""

    shape: InputContract
    teacher: bool
    max_batch = None

    def _read_inputs(self, shapes: dict) -> None:
        """The clip contract and whether the teacher's window is an input, from the model's input
        shapes (name -> shape)."""
        self.shape = clip_shape_from_inputs(shapes)
        self.teacher = "long_frames" in shapes

    def predict_windows(self, windows) -> dict[str, np.ndarray]:
        """Clips as stored windows (objects with `crops`, `landmarks`, `offset`) -> outputs."""
        return self.predict(_stack([
            {k: np.asarray(v) for k, v in self.shape.window_inputs(
                w.crops, w.landmarks, w.offset, with_teacher=self.teacher).items()}
            for w in windows]))


class InProcessModel(_LocalModel):
    """A SavedModel loaded here: a version folder, or a base path (its highest version)."""

    def __init__(self, path: str):
        from vtcaps_tf.export.model_card import read_model_card
        from vtcaps_tf.serving.servables import Servable

        self.path = version_folder(path)
        self.card = read_model_card(self.path)
        self.servable = Servable("local", 0, self.path, warmup=False)
        self.signature = self.servable.signature(SIGNATURE)
        self._read_inputs({k: s.shape for k, s in self.signature.inputs.items()})

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.signature.run(inputs)

    def describe(self) -> str:
        return f"SavedModel {self.path}"


class TFLiteInProcessModel(_LocalModel):
    """A TFLite model (`vtcaps export --tflite`) run here by the TFLite interpreter: a `.tflite`
    file with its `.json` beside it, or a version folder holding `model.tflite`. Its outputs are
    the SavedModel's `serving_default` outputs; the model card is the version's, when the file
    lies in one."""

    def __init__(self, path: str):
        from vtcaps_tf.export.model_card import read_model_card
        from vtcaps_tf.export.tflite_runtime import TFLiteModel

        self.model = TFLiteModel(path)
        self.path = self.model.path
        self.card = read_model_card(os.path.dirname(os.path.abspath(self.path)))
        self._read_inputs({k: shape for k, (shape, _) in self.model.inputs.items()})

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.model.predict(inputs)

    def describe(self) -> str:
        return f"TFLite model {self.path} ({self.model.mode})"


def local_model(path: str, prefer_tflite: bool = False) -> InProcessModel | TFLiteInProcessModel:
    """The model at `path`, run here: a `.tflite` file, or a SavedModel folder (a version or a
    base path: its newest), whose `model.tflite` runs in place of the SavedModel when
    `prefer_tflite` and the version holds one. UsageError for anything else."""
    from vtcaps_tf.export.tflite_runtime import TFLITE_FILE

    if os.path.isfile(path):
        if not path.endswith(".tflite"):
            raise UsageError(f"{path!r} is a file but not a .tflite model; give a SavedModel folder "
                             "or a .tflite file")
        return TFLiteInProcessModel(path)
    version = version_folder(path)
    if prefer_tflite and os.path.isfile(os.path.join(version, TFLITE_FILE)):
        return TFLiteInProcessModel(version)
    return InProcessModel(version)


class RestModel:
    """A model behind TF Serving's REST API; clips go to its `serve_examples` signature."""

    def __init__(self, server: str, model_name: str, version: int | None = None):
        from vtcaps_tf.apps.client import ServingClient, ServingClientError

        self.client = ServingClient(server, model_name, version)
        self.card = None  # TF Serving's API does not serve a version's assets
        signature = self.client.signature(SIGNATURE)
        inputs = {k: shape for k, (_, shape) in signature["inputs"].items()}
        self.shape = clip_shape_from_inputs(inputs)
        self.teacher = "long_frames" in inputs
        examples = self.client.signature(EXAMPLES_SIGNATURE)  # raises when the export lacks it
        if "examples" not in examples["inputs"]:
            raise ServingClientError(0, f"{EXAMPLES_SIGNATURE} takes {sorted(examples['inputs'])}, "
                                     "not 'examples'")
        s = self.shape
        per_clip = 3 * s.image_size ** 2 * s.long_frames * 4 // 3
        self.max_batch = max(1, _REST_BODY_BUDGET // per_clip)
        self.last_body_bytes = 0  # size of the last request body (for measurements)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.client.predict(inputs, SIGNATURE)

    def predict_examples(self, examples: list[bytes]) -> dict[str, np.ndarray]:
        """Serialized SequenceExamples of one clip each -> outputs of `serve_examples`."""
        from vtcaps_tf.apps.client import encode_inputs

        body = encode_inputs({"examples": np.array(examples, dtype=object)}, EXAMPLES_SIGNATURE)
        self.last_body_bytes = len(body)
        return self.client.predict({}, body=body)

    def predict_windows(self, windows) -> dict[str, np.ndarray]:
        return self.predict_examples([self.shape.example(w.crops, w.landmarks, w.offset)
                                      for w in windows])

    def describe(self) -> str:
        return self.client.url


def open_model(source: ModelSource) -> InProcessModel | TFLiteInProcessModel | RestModel:
    """The model `source` names, ready for clips. A missing or unusable model raises UsageError; a
    server that does not answer raises ServingClientError, naming the model and the server."""
    if not source.server:
        return local_model(source.saved_model, source.prefer_tflite)
    from vtcaps_tf.apps.client import ServingClientError

    try:
        return RestModel(source.server, source.name, source.version)
    except ServingClientError as err:
        raise ServingClientError(err.status, f"cannot use model {source.name!r} at {source.server}: "
                                             f"{err.message}") from None
