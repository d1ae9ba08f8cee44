"""`folder` source: any `<root>/<class>/<video>` tree (video files or folders of frames).

The class list is the sorted class-folder names. The subject id is the file stem up to its first
underscore (`S010_003.avi` -> `S010`); a `<root>/subjects.csv` of `path,subject` rows (path
relative to the root) overrides it.
"""

from __future__ import annotations

import csv
import os

from vtcaps_pipeline.beam.sources.base import (Discovery, SourceError, VideoItem, relpath, require_dir,
                                   visible_entries)
from vtcaps_tf.face.video import is_image_file, is_video_file

SUBJECTS_FILE = "subjects.csv"


def subject_from_name(name: str, is_dir: bool = False) -> str:
    """`S010_003.avi` -> `S010` (a frame folder's name is used whole)."""
    stem = name if is_dir else os.path.splitext(name)[0]
    return stem.split("_", 1)[0] or stem


def read_subjects_csv(root: str) -> dict[str, str]:
    path = os.path.join(root, SUBJECTS_FILE)
    if not os.path.exists(path):
        return {}
    out = {}
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if not row or row[0].strip().lower() == "path":
                continue
            if len(row) < 2:
                raise SourceError(f"{path}: rows must be 'path,subject', got {row}")
            out[row[0].strip().replace(os.sep, "/")] = row[1].strip()
    return out


def list_class_folder(root: str, class_dir: str, label: str | None, subjects: dict[str, str]):
    """(items, ignored paths) of one class folder."""
    items, ignored = [], []
    for name in visible_entries(class_dir):
        path = os.path.join(class_dir, name)
        vid = relpath(path, root)
        if os.path.isdir(path):
            if not any(is_image_file(n) for n in os.listdir(path)):
                ignored.append(vid)
                continue
        elif not is_video_file(name):
            ignored.append(vid)
            continue
        items.append(VideoItem(path=path, video_id=vid, subject=subjects.get(vid, subject_from_name(name, os.path.isdir(path))),
                               label_name=label))
    return items, ignored


def discover(root: str) -> Discovery:
    require_dir(root, "input")
    subjects = read_subjects_csv(root)
    classes = [n for n in visible_entries(root) if os.path.isdir(os.path.join(root, n))]
    if not classes:
        raise SourceError(f"{root!r} holds no class folders (expected <root>/<class>/<video>)")
    items, ignored, empty = [], [], []
    for name in classes:
        found, skipped = list_class_folder(root, os.path.join(root, name), name, subjects)
        items += found
        ignored += skipped
        if not found:
            empty.append(name)
    return Discovery("folder", root, classes, items, empty, ignored).check()
