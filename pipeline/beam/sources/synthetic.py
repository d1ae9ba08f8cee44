"""`synthetic` source: the generated expression set (`vtcaps synth`): the folder layout
`<root>/<class>/<subject>_<k>.avi` plus `<root>/manifest.json`, which gives the class order and
the subject of every video. Otherwise as the `folder` source."""

from __future__ import annotations

import json
import os

from vtcaps_pipeline.beam.sources.base import Discovery, SourceError, VideoItem, require_dir
from vtcaps_pipeline.beam.sources.folder import list_class_folder

MANIFEST = "manifest.json"


def discover(root: str) -> Discovery:
    require_dir(root, "input")
    path = os.path.join(root, MANIFEST)
    if not os.path.exists(path):
        raise SourceError(f"{root!r} has no {MANIFEST}: is it the output of `vtcaps synth`?")
    try:
        with open(path) as f:
            manifest = json.load(f)
        classes = [str(c) for c in manifest["classes"]]
        videos = manifest["videos"]
    except (ValueError, KeyError, TypeError) as err:
        raise SourceError(f"{path} is not a synthetic-set manifest: {err!r}") from err
    items, listed = [], set()
    for entry in videos:
        rel = str(entry["path"]).replace(os.sep, "/")
        listed.add(rel)
        label = entry.get("label")
        items.append(VideoItem(path=os.path.join(root, rel), video_id=rel,
                               subject=str(entry.get("subject") or rel.rsplit("/", 1)[-1].split("_")[0]),
                               label_name=None if label is None else str(label)))
    # Files on disk that the manifest does not list are reported, not processed.
    ignored = []
    for name in classes:
        class_dir = os.path.join(root, name)
        if os.path.isdir(class_dir):
            found, skipped = list_class_folder(root, class_dir, name, {})
            ignored += [i.video_id for i in found if i.video_id not in listed] + skipped
    counts = {c: 0 for c in classes}
    for item in items:
        if item.label_name in counts:
            counts[item.label_name] += 1
    empty = [c for c in classes if counts[c] == 0]
    return Discovery("synthetic", root, classes, items, empty, ignored).check()
