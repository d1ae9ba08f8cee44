"""The options of `vtcaps predict` and `vtcaps stream`, as typed values with their defaults.

Light at load (the standard library), so that the commands' parsers show these defaults without
TensorFlow. Each dataclass checks its values and raises UsageError for one no run can use.
"""

from __future__ import annotations

import dataclasses

from vtcaps_tf.errors import UsageError

FACES = ("all", "largest")  # every face, or the largest of each frame
DEFAULT_MAX_FACES = 16  # faces analysed in one frame at most (a group photo), the largest
DEFAULT_MODEL_NAME = "vtcaps"
# Clips per model call. In process, the model's activations dominate peak memory and a larger
# batch is not faster on a CPU; over REST the server does that work and fewer, larger requests
# save round trips.
IN_PROCESS_BATCH, REST_BATCH = 1, 4


def _at_least_one(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise UsageError(f"{name} must be at least 1, got {value}")


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """Where the model is: a TF Serving (or `vtcaps serve`) REST address, or a model here: a
    SavedModel folder (a version, or a base path: its newest) or a `.tflite` file. Exactly one of
    `server` and `saved_model`. `prefer_tflite`: run the version's `model.tflite` (from `vtcaps
    export --tflite`) in place of its SavedModel when it holds one."""

    server: str | None = None
    saved_model: str | None = None
    name: str = DEFAULT_MODEL_NAME  # served model name
    version: int | None = None  # served version; None: the newest
    prefer_tflite: bool = False

    def __post_init__(self):
        if bool(self.server) == bool(self.saved_model):
            raise UsageError("give exactly one of a server address or a SavedModel folder")
        if self.server and self.prefer_tflite:
            raise UsageError("preferring the TFLite model is for a model read here (--saved-model); "
                             "a server chooses its own (`vtcaps serve --prefer_tflite_model`)")


@dataclasses.dataclass(frozen=True)
class PredictOptions:
    """How `vtcaps predict` reads the videos, asks the model and writes what it found."""

    model: ModelSource
    faces: str = FACES[0]
    max_faces: int = DEFAULT_MAX_FACES
    max_frames: int | None = None  # a longer video is refused with an error; None: no limit
    batch_size: int | None = None  # clips per model call; None: REST_BATCH or IN_PROCESS_BATCH
    annotate: str | None = None  # OUT.mp4: the one video, with each face's box and emotion
    format: str = "table"  # a key of predict_report.FORMATS
    output: str | None = None  # the results go here; None: stdout
    plot: str | None = None  # PNG of the per-clip probabilities over time

    def __post_init__(self):
        from vtcaps_tf.apps.predict_report import FORMATS  # numpy, no TensorFlow

        if self.faces not in FACES:
            raise UsageError(f"faces must be one of {FACES}, got {self.faces!r}")
        if self.format not in FORMATS:
            raise UsageError(f"format must be one of {sorted(FORMATS)}, got {self.format!r}")
        _at_least_one("batch size", self.batch_size)
        _at_least_one("max faces", self.max_faces)
        _at_least_one("max frames", self.max_frames)
        if self.plot and not self.plot.lower().endswith(".png"):
            raise UsageError(f"the plot needs a .png file name, got {self.plot!r}")

    @property
    def batch(self) -> int:
        return self.batch_size or (REST_BATCH if self.model.server else IN_PROCESS_BATCH)


@dataclasses.dataclass(frozen=True)
class StreamOptions:
    """How `vtcaps stream` reads its source and asks the model."""

    source: str  # a camera index ("0"), a video file, or a URL OpenCV can open
    model: ModelSource
    every: int | None = None  # frames between two predictions of a face; None: the clip length
    realtime: bool = False  # play a file at its own frame rate, dropping frames when behind
    faces: str = FACES[0]
    max_faces: int = DEFAULT_MAX_FACES
    max_frames: int | None = None  # stop after this many frames
    annotate: str | None = None  # OUT.mp4: the analysed frames, annotated

    def __post_init__(self):
        if self.faces not in FACES:
            raise UsageError(f"faces must be one of {FACES}, got {self.faces!r}")
        _at_least_one("every", self.every)
        _at_least_one("max faces", self.max_faces)
        _at_least_one("max frames", self.max_frames)
