"""The TFRecord schema: the one definition that the Beam writer, the tf.data reader and the
exported `serve_examples` signature all use (docs/design.md section 3).

One `tf.train.SequenceExample` per clip. The sequence features hold the *long* window of the clip
(the frames TPN-ERM sees, centred on the clip, edge frames repeated where the video is shorter);
the short clip that 3D-CapsNet sees starts at `clip_offset` inside it and lasts `clip_frames`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np
import tensorflow as tf

SCHEMA_VERSION = 1
AU_MAP_SIZE = 100
NUM_LANDMARKS = 68
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
    "au_map": tf.io.FixedLenSequenceFeature([], tf.string),  # float16 bytes, AU_MAP_SIZE^2
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
    au_maps: np.ndarray  # [T, 100, 100] in [0, 1]
    image_size: int
    start_time: float = 0.0
    end_time: float = 0.0
    fold: int = -1

    def to_example(self) -> tf.train.SequenceExample:
        t = len(self.frames_jpeg)
        landmarks = np.asarray(self.landmarks, np.float32).reshape(t, 2 * NUM_LANDMARKS)
        au_maps = np.asarray(self.au_maps, np.float16).reshape(t, AU_MAP_SIZE * AU_MAP_SIZE)
        if not (len(landmarks) == len(au_maps) == t):
            raise ValueError("frames, landmarks and au_maps must have one entry per frame")

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
            "au_map": tf.train.FeatureList(feature=[_bytes(row.tobytes()) for row in au_maps]),
        })
        return tf.train.SequenceExample(context=context, feature_lists=sequence)


def parse_example(serialized):
    """One serialized SequenceExample -> (context dict, sequence dict) of tensors."""
    return tf.io.parse_single_sequence_example(
        serialized, context_features=CONTEXT_FEATURES, sequence_features=SEQUENCE_FEATURES)


def _centred_indices(num_stored, centre, length):
    """`length` frame indices centred on `centre`, clamped to the stored window (edge repeat)."""
    start = tf.cast(tf.math.floor(centre - tf.cast(length, tf.float32) / 2.0), tf.int32)
    return tf.clip_by_value(tf.range(length, dtype=tf.int32) + start, 0, num_stored - 1)


def decode_clip(context, sequence, clip_frames: int, long_frames: int, image_size: int):
    """Parsed features -> the model's named inputs (graph-safe; used by tf.data and by export).

    Returns {"frames": uint8 [N,S,S,3], "au_map": float32 [N,100,100], "long_frames": uint8 [M,S,S,3]}.
    The short clip and the long window are both centred on the stored clip's centre.
    """
    num_stored = tf.shape(sequence["frames"])[0]
    centre = (tf.cast(context["clip_offset"], tf.float32)
              + tf.cast(context["clip_frames"], tf.float32) / 2.0)
    short_idx = _centred_indices(num_stored, centre, clip_frames)
    long_idx = _centred_indices(num_stored, centre, long_frames)

    def _decode(jpeg):
        img = tf.io.decode_jpeg(jpeg, channels=3)
        img = tf.image.resize(img, [image_size, image_size], method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(img), 0.0, 255.0), tf.uint8)

    # Decode each stored frame once, then gather both windows from it.
    stored = tf.map_fn(_decode, sequence["frames"],
                       fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.uint8))
    au = tf.io.decode_raw(sequence["au_map"], tf.float16)
    au = tf.reshape(tf.cast(au, tf.float32), [-1, AU_MAP_SIZE, AU_MAP_SIZE])
    return {
        "frames": tf.gather(stored, short_idx),
        "au_map": tf.gather(au, short_idx),
        "long_frames": tf.gather(stored, long_idx),
    }


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
        raise SchemaError(f"{data_dir!r} was written with schema version {version}, this reader "
                          f"needs {SCHEMA_VERSION}: run `vtcaps preprocess` again")
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
