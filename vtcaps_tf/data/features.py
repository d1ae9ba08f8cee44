"""The TFRecord schema: the one definition that the Beam writer, the tf.data reader and the
exported `serve_examples` signature all use (docs/design.md section 3).

One `tf.train.SequenceExample` per *segment*: a run of consecutive frames of one video and the
clips cut from it. The sequence features hold each stored frame once, as its JPEG face crop and
its 68 landmarks (the model draws the AU attention map from the landmarks itself). The per-clip
context features (`CLIP_FEATURES`) are lists with one entry per clip: clip k's short clip (the
frames 3D-CapsNet sees) starts at `clip_offset[k]` in the stored frames and lasts `clip_frames`;
its long TPN-ERM window is centred on it, indices outside the stored frames repeating the edge
frames, which is where the video ends. Which stored frames make a model's inputs is decided in
one place, `vtcaps_tf.data.contract.InputContract`.

Schema versions: 1 also stored a float16 100x100 AU map per frame; 2 stored one clip per record,
its whole long window (with M = 2N, each frame twice); 3 (this one) stores segments. A version-2
record is a segment of one clip, so version 3 reads version-2 data.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np
import tensorflow as tf

from vtcaps_tf.data import storage
from vtcaps_tf.errors import UsageError
from vtcaps_tf.face.landmarks import NUM_LANDMARKS

SCHEMA_VERSION = 3
READABLE_VERSIONS = (2, 3)  # a version-2 record is a one-clip segment
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
    "num_frames": tf.io.FixedLenFeature([], tf.int64),  # frames stored
    "clip_frames": tf.io.FixedLenFeature([], tf.int64),  # N of the short clips
    "fps": tf.io.FixedLenFeature([], tf.float32),
    "image_size": tf.io.FixedLenFeature([], tf.int64),
    "source": tf.io.FixedLenFeature([], tf.string),
    # Cross-validation fold of the clip's subject (`preprocess --folds K`); -1: not split in folds.
    # The default keeps records written before the field existed readable.
    "fold": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
}
# One entry per clip of the segment (parsed as 1-D tensors; `clips_of` splits them).
CLIP_FEATURES = {
    "clip_index": tf.io.RaggedFeature(tf.int64),  # clip number in the video
    "clip_offset": tf.io.RaggedFeature(tf.int64),  # first short-clip frame in the stored frames
    "start_time": tf.io.RaggedFeature(tf.float32),  # seconds, short clip in the video
    "end_time": tf.io.RaggedFeature(tf.float32),
}
SEQUENCE_FEATURES = {
    "frames": tf.io.FixedLenSequenceFeature([], tf.string),  # JPEG of the aligned RGB face crop
    "landmarks": tf.io.FixedLenSequenceFeature([2 * NUM_LANDMARKS], tf.float32),  # x0,y0,x1,.. in [0,1]
}


@dataclasses.dataclass
class _Stored:
    """What every record holds besides its clips: the video's identity and label, and the stored
    frames."""

    video_id: str
    subject_id: str
    label: int
    label_name: str
    clip_frames: int
    fps: float
    source: str
    frames_jpeg: list[bytes]  # one JPEG per stored frame
    landmarks: np.ndarray  # [T, 68, 2] in crop pixels / image_size, i.e. [0, 1]
    image_size: int


@dataclasses.dataclass
class Segment(_Stored):
    """One record as the writer produces it: stored frames of one video and the clips cut from
    them (one entry per clip in `clip_index`, `clip_offset`, `start_time`, `end_time`).
    `to_example()` is the only way a record is serialised."""

    clip_index: list[int]
    clip_offset: list[int]
    start_time: list[float]
    end_time: list[float]
    fold: int = -1

    def to_example(self) -> tf.train.SequenceExample:
        t = len(self.frames_jpeg)
        landmarks = np.asarray(self.landmarks, np.float32).reshape(-1, 2 * NUM_LANDMARKS)
        if len(landmarks) != t:
            raise ValueError(f"{t} frames but {len(landmarks)} landmark rows: one per frame needed")
        k = len(self.clip_offset)
        if not k or any(len(v) != k for v in (self.clip_index, self.start_time, self.end_time)):
            raise ValueError("a segment needs one clip_index, clip_offset, start_time and end_time "
                             "per clip, and at least one clip")
        for offset in self.clip_offset:
            if not 0 <= offset <= t - self.clip_frames:
                raise ValueError(f"a clip of {self.clip_frames} frames at offset {offset} does not "
                                 f"fit in {t} stored frames")

        def _bytes(v):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

        def _ints(*v):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(x) for x in v]))

        def _floats(*v):
            return tf.train.Feature(float_list=tf.train.FloatList(value=[float(x) for x in v]))

        context = tf.train.Features(feature={
            "video_id": _bytes(self.video_id.encode()),
            "subject_id": _bytes(self.subject_id.encode()),
            "label": _ints(self.label),
            "label_name": _bytes(self.label_name.encode()),
            "clip_index": _ints(*self.clip_index),
            "num_frames": _ints(t),
            "clip_frames": _ints(self.clip_frames),
            "clip_offset": _ints(*self.clip_offset),
            "start_time": _floats(*self.start_time),
            "end_time": _floats(*self.end_time),
            "fps": _floats(self.fps),
            "image_size": _ints(self.image_size),
            "source": _bytes(self.source.encode()),
            "fold": _ints(self.fold),
        })
        sequence = tf.train.FeatureLists(feature_list={
            "frames": tf.train.FeatureList(feature=[_bytes(b) for b in self.frames_jpeg]),
            "landmarks": tf.train.FeatureList(feature=[
                tf.train.Feature(float_list=tf.train.FloatList(value=row)) for row in landmarks]),
        })
        return tf.train.SequenceExample(context=context, feature_lists=sequence)


@dataclasses.dataclass
class Clip(_Stored):
    """A record of one clip (a one-clip `Segment`): what `serve_examples` takes."""

    clip_index: int
    clip_offset: int
    start_time: float = 0.0
    end_time: float = 0.0
    fold: int = -1

    def to_example(self) -> tf.train.SequenceExample:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return Segment(**{k: [v] if k in CLIP_FEATURES else v for k, v in fields.items()}).to_example()


def parse_example(serialized):
    """One serialized SequenceExample -> (context dict, sequence dict) of tensors; the
    `CLIP_FEATURES` are 1-D, one entry per clip of the segment."""
    return tf.io.parse_single_sequence_example(
        serialized, context_features={**CONTEXT_FEATURES, **CLIP_FEATURES},
        sequence_features=SEQUENCE_FEATURES)


def num_clips(context):
    """Clips in a parsed record."""
    return tf.shape(context["clip_offset"], out_type=tf.int64)[0]


def clips_of(context, sequence) -> tf.data.Dataset:
    """The clips of one parsed record, as (context, sequence) pairs whose `CLIP_FEATURES` are
    scalars; every clip refers to the record's one copy of the stored frames."""
    shared = {k: v for k, v in context.items() if k not in CLIP_FEATURES}
    per_clip = tf.data.Dataset.from_tensor_slices({k: context[k] for k in CLIP_FEATURES})
    return per_clip.map(lambda clip: ({**shared, **clip}, sequence))


def only_clip(context) -> dict:
    """The context of a record that must hold exactly one clip (a `serve_examples` request),
    with scalar `CLIP_FEATURES`; an error naming the count otherwise."""
    n = num_clips(context)
    check = tf.debugging.assert_equal(
        n, tf.constant(1, tf.int64),
        message="a serve_examples record must hold exactly one clip (write it with "
                "`InputContract.example`, or preprocess with --clips-per-record 1)")
    with tf.control_dependencies([check]):
        return {k: tf.identity(v[0]) if k in CLIP_FEATURES else v for k, v in context.items()}


def read_clips(files) -> tf.data.Dataset:
    """(context, sequence) of every clip in the given shards, in order."""
    ds = tf.data.TFRecordDataset(list(files), compression_type="GZIP")
    return ds.map(parse_example).flat_map(clips_of)


def encode_jpeg(rgb: np.ndarray, quality: int = storage.DEFAULT_JPEG_QUALITY) -> bytes:
    """RGB uint8 image -> JPEG bytes (OpenCV; decoded by tf.io.decode_jpeg as RGB).

    Huffman tables are optimised for each image: the same pixels in 7% fewer bytes at quality 90
    (112 px face crops)."""
    import cv2  # imported here so that importing the schema stays light

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]),
                           [int(cv2.IMWRITE_JPEG_QUALITY), quality, int(cv2.IMWRITE_JPEG_OPTIMIZE), 1])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


class SchemaError(UsageError):
    """The data directory cannot be read with this version of the schema (bad input: status 2)."""


def schema_mismatch(data_dir: str, version) -> str:
    """The message for a data directory written with another schema version."""
    how = ("regenerate it from the videos with `vtcaps preprocess --source ... --input ... "
           f"--output {data_dir}` (a new output directory works too)")
    readable = " and ".join(str(v) for v in READABLE_VERSIONS)
    if isinstance(version, int) and version < min(READABLE_VERSIONS):
        return (f"{data_dir!r} was written by an older version of vtcaps (schema version {version}"
                + (", which stored AU maps; the model now draws them from the landmarks" if version == 1
                   else "") + f"); this version reads schema versions {readable}: {how}")
    return (f"{data_dir!r} was written with schema version {version!r}, this version of vtcaps "
            f"reads {readable}: {how}")


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
    if version not in READABLE_VERSIONS:
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
