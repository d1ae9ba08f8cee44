"""TFX-style checks after the write: statistics of every split read back from the TFRecords, and
a schema check (the reader's feature spec of `vtcaps_tf/data/features.py` against what was
written). A failed check means the output is unusable; the job then exits non-zero."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from vtcaps_tf.data import features


class ValidationError(ValueError):
    """The written dataset would not train: the message lists every problem found."""


def split_statistics(data_dir: str, split: str) -> dict:
    """Read every record of a split with the reader's spec -> records, clips, videos, subjects,
    per class (cheap: the context features only, no image decoding)."""
    files = features.split_files(data_dir, split)
    stats = {"shards": len(files), "records": 0, "clips": 0, "videos": 0, "subjects": [],
             "clips_per_class": {}, "label_ids": {}, "clip_frames": [], "image_size": [],
             "misplaced": 0}
    if not files:
        return stats
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").map(
        lambda s: features.parse_example(s)[0])
    videos, subjects = set(), set()
    clip_frames, image_size = set(), set()
    for ctx in ds.as_numpy_iterator():
        k = len(ctx["clip_offset"])
        stats["records"] += 1
        stats["clips"] += k
        name = ctx["label_name"].decode()
        stats["clips_per_class"][name] = stats["clips_per_class"].get(name, 0) + k
        stats["label_ids"].setdefault(name, set()).add(int(ctx["label"]))
        videos.add(ctx["video_id"].decode())
        subjects.add(ctx["subject_id"].decode())
        clip_frames.add(int(ctx["clip_frames"]))
        image_size.add(int(ctx["image_size"]))
        # Every clip must lie inside the stored frames, with one index and time per clip.
        offsets = ctx["clip_offset"]
        past_end = offsets + ctx["clip_frames"] > ctx["num_frames"]
        stats["misplaced"] += int(np.sum((offsets < 0) | past_end))
        if not k or any(len(ctx[key]) != k for key in features.CLIP_FEATURES):
            stats["misplaced"] += max(k, 1)
    stats.update(videos=len(videos), subjects=sorted(subjects),
                 clip_frames=sorted(clip_frames), image_size=sorted(image_size),
                 label_ids={k: sorted(v) for k, v in stats["label_ids"].items()})
    return stats


def _check_decoded(data_dir, split, clip_frames, long_frames, image_size, sample) -> list[str]:
    """Decode a few clips exactly as training does; check shapes and value ranges."""
    from vtcaps_tf.data.contract import InputContract

    contract = InputContract(clip_frames, long_frames, image_size)

    def decode(context, sequence):
        inputs = contract.decode_example(context, sequence)
        lengths = tf.stack([tf.shape(sequence[k])[0] for k in ("frames", "landmarks")])
        return inputs, lengths

    ds = features.read_clips(features.split_files(data_dir, split)).take(sample).map(decode)
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
        if s["misplaced"]:
            problems.append(f"{split}: {s['misplaced']} clips lie outside their record's stored "
                            "frames, or lack their index or times")
        if s["clips"]:
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
        del s["label_ids"], s["clip_frames"], s["image_size"], s["misplaced"]
    return stats
