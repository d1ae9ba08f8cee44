"""The TFRecord schema: the one definition that the Beam writer, the tf.data reader and the
exported `serve_examples` signature all use (docs/design.md section 3).

One `tf.train.SequenceExample` per clip. The sequence features hold the *long* window of the clip
(the frames TPN-ERM sees, centred on the clip, edge frames repeated where the video is shorter);
the short clip that 3D-CapsNet sees starts at `clip_offset` inside it and lasts `clip_frames`.
Each frame is stored as its JPEG face crop and its 68 landmarks; the model draws the AU attention
map from the landmarks itself. Which stored frames make a model's inputs is decided in one place,
`vtcaps_tf.data.contract.InputContract`.

Schema versions: 1 also stored a float16 100x100 AU map per frame; 2 (this one) does not.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np
import tensorflow as tf

from vtcaps_tf.face.landmarks import NUM_LANDMARKS

SCHEMA_VERSION = 2
METADATA_FILE = "metadata.json"
STATS_FILE = "stats.json"
SPLITS = ("train", "val", "test")
SHARD_SUFFIX = ".tfrecord.gz"
DEAD_LETTER_PREFIX = "dead_letter"

CONTEXT_FEATURES = {
    "video_id": tf.io.FixedLenFeature([], tf.string),
    "subject_id": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "label_name": tf.io.FixedLenFeature([], tf.string),
    "clip_index": tf.io.FixedLenFeature([], tf.int64),
    "num_frames": tf.io.FixedLenFeature([], tf.int64),  # frames stored (the long window)
    "clip_frames": tf.io.FixedLenFeature([], tf.int64),  # N of the short clip
    "clip_offset": tf.io.FixedLenFeature([], tf.int64),  # first short-clip frame in the window
    "start_time": tf.io.FixedLenFeature([], tf.float32),  # seconds, short clip in the video
    "end_time": tf.io.FixedLenFeature([], tf.float32),
    "fps": tf.io.FixedLenFeature([], tf.float32),
    "image_size": tf.io.FixedLenFeature([], tf.int64),
    "source": tf.io.FixedLenFeature([], tf.string),
    # Cross-validation fold of the clip's subject (`preprocess --folds K`); -1: not split in folds.
    # The default keeps records written before the field existed readable.
    "fold": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
}
SEQUENCE_FEATURES = {
    "frames": tf.io.FixedLenSequenceFeature([], tf.string),  # JPEG of the aligned RGB face crop
    "landmarks": tf.io.FixedLenSequenceFeature([2 * NUM_LANDMARKS], tf.float32),  # x0,y0,x1,.. in [0,1]
}


@dataclasses.dataclass
class Clip:
    """One clip as the writer produces it; `to_example()` is the only way it is serialised."""

    video_id: str
    subject_id: str
    label: int
    label_name: str
    clip_index: int
    clip_frames: int
    clip_offset: int
    fps: float
    source: str
    frames_jpeg: list[bytes]  # one JPEG per window frame
    landmarks: np.ndarray  # [T, 68, 2] in crop pixels / image_size, i.e. [0, 1]
    image_size: int
    start_time: float = 0.0
    end_time: float = 0.0
    fold: int = -1

    def to_example(self) -> tf.train.SequenceExample:
        t = len(self.frames_jpeg)
        landmarks = np.asarray(self.landmarks, np.float32).reshape(-1, 2 * NUM_LANDMARKS)
        if len(landmarks) != t:
            raise ValueError(f"{t} frames but {len(landmarks)} landmark rows: one per frame needed")

        def _bytes(v):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

        def _int(v):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))

        def _float(v):
            return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v)]))

        context = tf.train.Features(feature={
            "video_id": _bytes(self.video_id.encode()),
            "subject_id": _bytes(self.subject_id.encode()),
            "label": _int(self.label),
            "label_name": _bytes(self.label_name.encode()),
            "clip_index": _int(self.clip_index),
            "num_frames": _int(t),
            "clip_frames": _int(self.clip_frames),
            "clip_offset": _int(self.clip_offset),
            "start_time": _float(self.start_time),
            "end_time": _float(self.end_time),
            "fps": _float(self.fps),
            "image_size": _int(self.image_size),
            "source": _bytes(self.source.encode()),
            "fold": _int(self.fold),
        })
        sequence = tf.train.FeatureLists(feature_list={
            "frames": tf.train.FeatureList(feature=[_bytes(b) for b in self.frames_jpeg]),
            "landmarks": tf.train.FeatureList(feature=[
                tf.train.Feature(float_list=tf.train.FloatList(value=row)) for row in landmarks]),
        })
        return tf.train.SequenceExample(context=context, feature_lists=sequence)


def parse_example(serialized):
    """One serialized SequenceExample -> (context dict, sequence dict) of tensors."""
    return tf.io.parse_single_sequence_example(
        serialized, context_features=CONTEXT_FEATURES, sequence_features=SEQUENCE_FEATURES)


def encode_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    """RGB uint8 image -> JPEG bytes (OpenCV; decoded by tf.io.decode_jpeg as RGB)."""
    import cv2  # imported here so that importing the schema stays light

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]),
                           [int(cv2.IMWRITE_JPEG_QUALITY), quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


class SchemaError(ValueError):
    """The data directory cannot be read with this version of the schema."""


def schema_mismatch(data_dir: str, version) -> str:
    """The message for a data directory written with another schema version."""
    how = ("regenerate it from the videos with `vtcaps preprocess --source ... --input ... "
           f"--output {data_dir}` (a new output directory works too)")
    if isinstance(version, int) and version < SCHEMA_VERSION:
        return (f"{data_dir!r} was written by an older version of vtcaps (schema version {version}"
                + (", which stored AU maps; the model now draws them from the landmarks" if version == 1
                   else "") + f"); this version reads schema version {SCHEMA_VERSION}: {how}")
    return (f"{data_dir!r} was written with schema version {version!r}, this version of vtcaps "
            f"reads {SCHEMA_VERSION}: {how}")


def read_metadata(data_dir: str) -> dict:
    """metadata.json of a preprocessing output, checked; clear errors for every way it can be off."""
    if not tf.io.gfile.isdir(data_dir):
        raise SchemaError(f"data directory {data_dir!r} does not exist")
    path = os.path.join(data_dir, METADATA_FILE)
    if not tf.io.gfile.exists(path):
        raise SchemaError(f"{data_dir!r} has no {METADATA_FILE}: is it the output of `vtcaps preprocess`?")
    with tf.io.gfile.GFile(path) as f:
        meta = json.load(f)
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaError(schema_mismatch(data_dir, version))
    for key in ("classes", "clip_frames", "long_frames", "image_size"):
        if key not in meta:
            raise SchemaError(f"{path} lacks {key!r}")
    return meta


def fold_split(k: int) -> str:
    """Shard name of fold k: the output of `preprocess --folds K` holds fold00 .. fold{K-1}."""
    return f"fold{k:02d}"


def fold_index(split: str) -> int:
    """foldNN -> NN; -1 for train/val/test."""
    return int(split[4:]) if split.startswith("fold") else -1


def data_splits(meta: dict) -> list[str]:
    """The shard names a preprocessing output holds: train/val/test, or one per fold."""
    folds = int(meta.get("folds") or 0)
    return [fold_split(k) for k in range(folds)] if folds else list(SPLITS)


def split_files(data_dir: str, split: str) -> list[str]:
    """The shards of one split (train, val, test or a fold's foldNN), sorted."""
    if split not in SPLITS and not re.fullmatch(r"fold\d{2,}", split):
        raise ValueError(f"split must be one of {SPLITS} or a fold (fold00, ...), got {split!r}")
    return sorted(tf.io.gfile.glob(os.path.join(data_dir, f"{split}-*{SHARD_SUFFIX}")))
