"""The model `vtcaps predict` and `vtcaps stream` ask: a SavedModel loaded in process, or one behind
TF Serving's REST API. Both read the clip length N, TPN window M and crop size S from the
serving signature.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

SIGNATURE = "serving_default"
# Keep one REST request body (JSON text, ~4 bytes per uint8 value) well under a server's limit.
_REST_BODY_BUDGET = 32 << 20


@dataclasses.dataclass(frozen=True)
class ClipShape:
    clip_frames: int  # N
    long_frames: int  # M
    image_size: int  # S


def clip_shape_from_inputs(inputs: dict) -> ClipShape:
    """{name: shape tuple} of serving_default's inputs -> N, M, S (all must be static)."""
    missing = {"frames", "au_map", "long_frames"} - set(inputs)
    if missing:
        raise ValueError(f"the model's {SIGNATURE} signature lacks inputs {sorted(missing)}; "
                         f"it has {sorted(inputs)}")
    frames, long_frames = inputs["frames"], inputs["long_frames"]
    for name, shape in (("frames", frames), ("long_frames", long_frames)):
        if shape is None or len(shape) != 5 or None in shape[1:]:
            raise ValueError(f"input {name!r} needs a static shape [-1, T, S, S, 3], got {shape}")
    if frames[2] != frames[3] or frames[2:] != long_frames[2:]:
        raise ValueError(f"frames {frames} and long_frames {long_frames} disagree on the crop size")
    return ClipShape(frames[1], long_frames[1], frames[2])


class InProcessModel:
    """A SavedModel loaded here: a version folder, or a base path (its highest version)."""

    def __init__(self, path: str):
        from vtcaps_tf.serving.models import SAVED_MODEL_FILES, Servable, ready_version_dirs

        if not os.path.isdir(path):
            raise FileNotFoundError(f"no SavedModel folder {path!r}")
        if not any(os.path.exists(os.path.join(path, f)) for f in SAVED_MODEL_FILES):
            folders = ready_version_dirs(path)
            if not folders:
                raise FileNotFoundError(f"{path!r} is neither a SavedModel nor a base path with "
                                        "integer version folders")
            path = os.path.join(path, folders[max(folders)])  # the folder's own name: 00000123 stays
        from vtcaps_tf.model_card import read_model_card

        self.path = path
        self.card = read_model_card(path)
        self.servable = Servable("local", 0, path, warmup=False)
        self.signature = self.servable.signature(SIGNATURE)
        self.shape = clip_shape_from_inputs({k: s.shape for k, s in self.signature.inputs.items()})
        self.max_batch = None

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.signature.run(inputs)

    def describe(self) -> str:
        return f"SavedModel {self.path}"


class RestModel:
    """A model behind TF Serving's REST API."""

    def __init__(self, server: str, model_name: str, version: int | None = None):
        from vtcaps_tf.serving.client import ServingClient

        self.client = ServingClient(server, model_name, version)
        self.card = None  # TF Serving's API does not serve a version's assets
        signature = self.client.signature(SIGNATURE)
        self.shape = clip_shape_from_inputs({k: shape for k, (_, shape) in signature["inputs"].items()})
        s = self.shape
        per_clip = 4 * 3 * s.image_size ** 2 * (s.clip_frames + s.long_frames) + 20 * s.clip_frames * 100 * 100
        self.max_batch = max(1, _REST_BODY_BUDGET // per_clip)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.client.predict(inputs, SIGNATURE)

    def describe(self) -> str:
        return self.client.url
