"""A tiny preprocessing output for tests: gzip TFRecord shards of SequenceExamples written with
the schema's own `Clip.to_example()`, plus metadata.json, as `vtcaps preprocess` lays them out.

The clips are learnable: class k shows a bright square in the k-th position of a row, drifting
down over time, on a noisy background; the landmarks cluster on the square, so the AU map the
model draws from them lies on it too.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from vtcaps_tf.data import features


def synthetic_clip(label: int, num_classes: int, long_frames: int, clip_frames: int, image_size: int,
                   rng: np.random.Generator, video_id: str = "v", subject_id: str = "s") -> features.Clip:
    s = image_size
    side = max(2, s // (num_classes + 1))
    x0 = int((label + 0.5) * s / num_classes - side / 2)
    frames, landmarks = [], []
    for t in range(long_frames):
        img = rng.integers(0, 60, size=(s, s, 3), dtype=np.uint8)
        y0 = int(t * (s - side) / max(1, long_frames - 1))
        img[y0:y0 + side, max(0, x0):x0 + side] = 230
        frames.append(features.encode_jpeg(img))
        centre = np.array([x0 + side / 2, y0 + side / 2]) / s
        landmarks.append(np.clip(centre + rng.normal(0, 0.05, (features.NUM_LANDMARKS, 2)), 0, 1))
    return features.Clip(
        video_id=video_id, subject_id=subject_id, label=label, label_name=f"class_{label}",
        clip_index=0, clip_frames=clip_frames, clip_offset=(long_frames - clip_frames) // 2,
        fps=25.0, source="synthetic", frames_jpeg=frames, landmarks=np.stack(landmarks),
        image_size=image_size)


def write_dataset(root: str, counts=None, num_classes: int = 3, clip_frames: int = 8,
                  long_frames: int = 16, image_size: int = 32, seed: int = 0,
                  schema_version: int = features.SCHEMA_VERSION, shards: int = 1) -> str:
    """Writes `root/{split}-0000i-of-0000n.tfrecord.gz` and `metadata.json`; returns root.

    Labels cycle through the classes so every split holds every class when it has enough clips.
    """
    counts = dict(counts or {"train": 12, "val": 6, "test": 6})
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    for split, n in counts.items():
        writers = [tf.io.TFRecordWriter(
            os.path.join(root, f"{split}-{i:05d}-of-{shards:05d}{features.SHARD_SUFFIX}"), options)
            for i in range(shards)]
        for i in range(n):
            clip = synthetic_clip(i % num_classes, num_classes, long_frames, clip_frames, image_size,
                                  rng, video_id=f"{split}_{i}", subject_id=f"{split}{i}")
            writers[i % shards].write(clip.to_example().SerializeToString())
        for w in writers:
            w.close()
    meta = {
        "schema_version": schema_version,
        "classes": [f"class_{k}" for k in range(num_classes)],
        "clip_frames": clip_frames,
        "long_frames": long_frames,
        "image_size": image_size,
        "source": "synthetic",
        "counts": counts,
        "seed": seed,
        "split_ratios": [0.7, 0.15, 0.15],
    }
    with open(os.path.join(root, features.METADATA_FILE), "w") as f:
        json.dump(meta, f)
    return root
