"""What `vtcaps predict` reads: the videos, frame folders and photos named on its command line.

Light at load (the standard library and the report types); the file-type checks
(`vtcaps_tf.face.video`) load when used.
"""

from __future__ import annotations

import os

from vtcaps_tf.apps.predict_report import VideoPrediction


def find_videos(paths: list[str]) -> tuple[list[str], list[VideoPrediction]]:
    """Video files and frame folders named or found (recursively) under the given paths, and a
    VideoPrediction with the error for each path that gives none.

    A folder holding images and no videos or sub-folders is one video (its frames)."""
    from vtcaps_tf.face.video import is_image_file, is_video_file

    videos, missing = [], []
    for path in paths:
        if os.path.isfile(path):
            videos.append(path)
        elif os.path.isdir(path):
            found = []
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                visible = [f for f in files if not f.startswith(".")]
                if not dirs and visible and all(is_image_file(f) for f in visible):
                    found.append(root)  # a frame folder
                    continue
                found += [os.path.join(root, f) for f in sorted(visible) if is_video_file(f)]
            if not found:
                missing.append(VideoPrediction(path, error="no video files or frame folders in it"))
            videos += sorted(found)
        else:
            missing.append(VideoPrediction(path, error="no such file or folder"))
    return videos, missing


def is_photo(path: str) -> bool:
    """A single image file (predicted as a still clip per face), not a video or frame folder."""
    from vtcaps_tf.face.video import is_image_file

    return os.path.isfile(path) and is_image_file(path)
