"""`afew` source: AFEW's `Train_AFEW/<Class>/*.avi` and `Val_AFEW/<Class>/*.avi`, 7 classes.

AFEW has no subject ids, so every clip is its own group. Its official split is kept: the Val set
(the one the paper and EmotiW report on; Test labels are not public) becomes the `test` split, and
the Train set is shared out over `train` and `val` by the split ratios.
"""

from __future__ import annotations

import os

from vtcaps_pipeline.beam.sources.base import (Discovery, SourceError, VideoItem, relpath, visible_entries,
                                   require_dir)
from vtcaps_tf.face.video import is_video_file

CLASSES = ["Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"]
SETS = {"train_afew": None, "val_afew": "test"}  # folder name (lower case) -> fixed split


def discover(root: str) -> Discovery:
    require_dir(root, "input")
    by_lower = {c.lower(): c for c in CLASSES}
    sets = {n.lower(): os.path.join(root, n) for n in visible_entries(root)
            if os.path.isdir(os.path.join(root, n)) and n.lower() in SETS}
    if "train_afew" not in sets:
        raise SourceError(f"{root!r} has no Train_AFEW folder (expected Train_AFEW/<Class>/*.avi)")
    items, ignored, counts = [], [], {c: 0 for c in CLASSES}
    for set_name, set_dir in sorted(sets.items()):
        for folder in visible_entries(set_dir):
            class_dir = os.path.join(set_dir, folder)
            if not os.path.isdir(class_dir):
                ignored.append(relpath(class_dir, root))
                continue
            label = by_lower.get(folder.lower())
            for name in visible_entries(class_dir):
                path = os.path.join(class_dir, name)
                vid = relpath(path, root)
                if not (os.path.isfile(path) and is_video_file(name)):
                    ignored.append(vid)
                    continue
                dead = None if label else "unknown_label"
                items.append(VideoItem(
                    path=path, video_id=vid, subject=f"{set_name}/{os.path.splitext(name)[0]}",
                    label_name=label or folder, split=SETS[set_name], dead_reason=dead,
                    dead_detail="" if label else f"folder {folder!r} is not one of {CLASSES}"))
                if label:
                    counts[label] += 1
    empty = [c for c in CLASSES if counts[c] == 0]
    return Discovery("afew", root, list(CLASSES), items, empty, ignored).check()
