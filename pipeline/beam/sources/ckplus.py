"""`ckplus` source: the Extended Cohn-Kanade layout.

    cohn-kanade-images/S005/001/S005_001_00000001.png ...
    Emotion/S005/001/S005_001_00000011_emotion.txt      (one number, 0-7)
    Landmarks/S005/001/S005_001_00000001_landmarks.txt  (68 lines "x y", optional)

One sequence (a folder of frames) is one video; the subject is the `Sxxx` folder. The shipped 68
landmarks are used when every frame has them (MediaPipe is skipped). Sequences without an emotion
file are unlabelled in CK+: they are dead-lettered with reason `no_label`, so they are counted.
"""

from __future__ import annotations

import os

import numpy as np

from vtcaps_pipeline.beam.sources.base import (Discovery, SourceError, VideoItem, relpath, require_dir,
                                   visible_entries)
from vtcaps_tf.face.video import is_image_file

# CK+ emotion codes 1..7 (0 = neutral is not used as a sequence label).
CLASSES = ["anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"]
IMAGES_DIR = "cohn-kanade-images"
EMOTION_DIR = "Emotion"
LANDMARKS_DIR = "Landmarks"
CKPLUS_FPS = 30.0


def read_emotion(path: str) -> float:
    with open(path) as f:
        return float(f.read().split()[0])


def read_landmarks_file(path: str) -> np.ndarray:
    """A CK+ landmarks file -> [68, 2] pixels."""
    lm = np.loadtxt(path, dtype=np.float32).reshape(-1, 2)
    if lm.shape != (68, 2):
        raise ValueError(f"{path}: expected 68 points, got {lm.shape[0]}")
    return lm


def _label_of(emotion_dir: str) -> tuple[str | None, str | None, str]:
    """(label, dead reason, detail) of one sequence from its Emotion folder."""
    files = []
    if os.path.isdir(emotion_dir):
        files = [n for n in visible_entries(emotion_dir) if n.endswith("_emotion.txt")]
    if not files:
        return None, "no_label", "CK+ gives no emotion label for this sequence"
    try:
        code = read_emotion(os.path.join(emotion_dir, files[-1]))
    except (OSError, ValueError, IndexError) as err:
        return None, "unknown_label", f"unreadable emotion file: {err}"
    k = int(round(code))
    if abs(code - k) > 1e-3 or not 1 <= k <= len(CLASSES):
        return None, "unknown_label", f"emotion code {code} is not one of 1..{len(CLASSES)}"
    return CLASSES[k - 1], None, ""


def discover(root: str) -> Discovery:
    require_dir(root, "input")
    images = os.path.join(root, IMAGES_DIR)
    if not os.path.isdir(images):
        raise SourceError(f"{root!r} has no {IMAGES_DIR}/ folder (the CK+ layout)")
    items, ignored, counts = [], [], {c: 0 for c in CLASSES}
    for subject in visible_entries(images):
        subject_dir = os.path.join(images, subject)
        if not os.path.isdir(subject_dir):
            ignored.append(relpath(subject_dir, root))
            continue
        for seq in visible_entries(subject_dir):
            seq_dir = os.path.join(subject_dir, seq)
            if not os.path.isdir(seq_dir):
                ignored.append(relpath(seq_dir, root))
                continue
            frames = tuple(os.path.join(seq_dir, n) for n in visible_entries(seq_dir)
                           if is_image_file(n))
            label, dead, detail = _label_of(os.path.join(root, EMOTION_DIR, subject, seq))
            if not frames and not dead:
                dead, detail = "no_frames", f"{seq_dir} holds no images"
            lm_dir = os.path.join(root, LANDMARKS_DIR, subject, seq)
            lm_files = tuple(os.path.join(lm_dir, os.path.splitext(os.path.basename(f))[0]
                                          + "_landmarks.txt") for f in frames)
            if not frames or not all(os.path.exists(f) for f in lm_files):
                lm_files = None
            items.append(VideoItem(path=seq_dir, video_id=f"{subject}/{seq}", subject=subject,
                                   label_name=label, frame_files=frames, landmark_files=lm_files,
                                   fps=CKPLUS_FPS, dead_reason=dead, dead_detail=detail))
            if label and not dead:
                counts[label] += 1
    if not items:
        raise SourceError(f"{images!r} holds no sequences (expected Sxxx/yyy/*.png)")
    empty = [c for c in CLASSES if counts[c] == 0]
    return Discovery("ckplus", root, list(CLASSES), items, empty, ignored).check()
