"""TFX-style checks after the write: statistics of every split read back from the TFRecords, and
a schema check (the reader's feature spec of `vtcaps_tf/data/features.py` against what was
written). A failed check means the output is unusable; the job then exits non-zero."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from vtcaps_tf.data import features


class ValidationError(ValueError):
    """The written dataset would not train: the message lists every problem found."""


def _context_of(serialized):
    """The context features only: cheap, no image decoding."""
    return features.parse_example(serialized)[0]


def split_statistics(data_dir: str, split: str) -> dict:
    """Read every record of a split with the reader's spec -> clips, videos, subjects, per class."""
    files = features.split_files(data_dir, split)
    stats = {"shards": len(files), "clips": 0, "videos": 0, "subjects": [], "clips_per_class": {},
             "label_ids": {}, "num_frames": [], "clip_frames": [], "image_size": []}
    if not files:
        return stats
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").map(_context_of)
    videos, subjects = set(), set()
    num_frames, clip_frames, image_size = set(), set(), set()
    for ctx in ds.as_numpy_iterator():
        stats["clips"] += 1
        name = ctx["label_name"].decode()
        stats["clips_per_class"][name] = stats["clips_per_class"].get(name, 0) + 1
        stats["label_ids"].setdefault(name, set()).add(int(ctx["label"]))
        videos.add(ctx["video_id"].decode())
        subjects.add(ctx["subject_id"].decode())
        num_frames.add(int(ctx["num_frames"]))
        clip_frames.add(int(ctx["clip_frames"]))
        image_size.add(int(ctx["image_size"]))
    stats.update(videos=len(videos), subjects=sorted(subjects), num_frames=sorted(num_frames),
                 clip_frames=sorted(clip_frames), image_size=sorted(image_size),
                 label_ids={k: sorted(v) for k, v in stats["label_ids"].items()})
    return stats


def _check_decoded(data_dir, split, clip_frames, long_frames, image_size, sample) -> list[str]:
    """Decode a few records exactly as training does; check shapes and value ranges."""
    from vtcaps_tf.data.contract import InputContract

    contract = InputContract(clip_frames, long_frames, image_size)

    def decode(serialized):
        context, sequence = features.parse_example(serialized)
        inputs = contract.decode_example(context, sequence)
        lengths = tf.stack([tf.shape(sequence[k])[0] for k in ("frames", "landmarks")])
        return inputs, lengths

    files = features.split_files(data_dir, split)
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").take(sample).map(decode)
    expect = {k: shape[1:] for k, (shape, _) in contract.shapes().items()}
    problems = []
    try:
        for inputs, lengths in ds.as_numpy_iterator():
            for key, shape in expect.items():
                if tuple(inputs[key].shape) != shape:
                    problems.append(f"{split}: {key} decodes to {tuple(inputs[key].shape)}, expected {shape}")
            if not np.isfinite(inputs["landmarks"]).all():
                problems.append(f"{split}: landmarks are not finite")
            if len(set(lengths.tolist())) != 1:
                problems.append(f"{split}: frames and landmarks differ in length {lengths.tolist()}")
    except (tf.errors.InvalidArgumentError, ValueError) as err:
        problems.append(f"{split}: a record does not decode with the reader's spec: "
                        f"{str(err).splitlines()[0]}")
    return problems


def validate(data_dir: str, classes, clip_frames: int, long_frames: int, image_size: int,
             sample: int = 4, splits=features.SPLITS) -> dict:
    """Statistics of every split (train/val/test, or the folds), checked; raises
    `ValidationError` listing all problems."""
    stats, problems = {}, []
    for split in splits:
        try:
            stats[split] = split_statistics(data_dir, split)
        except tf.errors.OpError as err:
            problems.append(f"{split}: records do not parse with the reader's spec: "
                            f"{str(err).splitlines()[0]}")
    if problems:
        raise ValidationError("the written dataset failed its checks:\n  - " + "\n  - ".join(problems))
    if "train" in stats and stats["train"]["clips"] == 0:
        problems.append("the train split is empty: no video of a train subject gave a clip "
                        "(see the dead letters and stats.json)")
    for split in (s for s in stats if s.startswith("fold")):
        if stats[split]["clips"] == 0:
            problems.append(f"{split} is empty: no video of its subjects gave a clip "
                            "(see the dead letters and stats.json)")
    for split, s in stats.items():
        if s["shards"] == 0:
            problems.append(f"{split}: no {split}-*{features.SHARD_SUFFIX} shard was written")
        for name, ids in s["label_ids"].items():
            if name not in classes or ids != [list(classes).index(name)]:
                problems.append(f"{split}: label_name {name!r} carries label ids {ids}, "
                                f"the class list {list(classes)} says otherwise")
        if s["clips"]:
            if s["num_frames"] != [long_frames]:
                problems.append(f"{split}: stored windows of {s['num_frames']} frames, expected {long_frames}")
            if s["clip_frames"] != [clip_frames]:
                problems.append(f"{split}: clip_frames {s['clip_frames']}, expected {clip_frames}")
            if s["image_size"] != [image_size]:
                problems.append(f"{split}: image_size {s['image_size']}, expected {image_size}")
            problems += _check_decoded(data_dir, split, clip_frames, long_frames, image_size, sample)
    seen = {}
    for split, s in stats.items():
        for subject in s["subjects"]:
            if subject in seen:
                problems.append(f"subject {subject!r} is in both {seen[subject]} and {split}")
            seen[subject] = split
    if problems:
        raise ValidationError("the written dataset failed its checks:\n  - " + "\n  - ".join(problems))
    for s in stats.values():
        del s["label_ids"], s["num_frames"], s["clip_frames"], s["image_size"]
    return stats
