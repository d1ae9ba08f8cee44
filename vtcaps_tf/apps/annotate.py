"""Drawing predictions onto video frames: each face's box, its current emotion and a probability
bar, and a `no_face` mark where a face is not seen (for `predict --annotate` and `stream --annotate`).

`predict --annotate OUT.mp4` reads the video a second time after predicting it, one frame at a
time, so that writing the annotated copy needs no more memory than the prediction did.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# BGR colours of faces 0, 1, ... (OpenCV draws in BGR).
_COLOURS = ((60, 200, 60), (230, 140, 30), (40, 160, 240), (200, 60, 200), (40, 220, 220), (160, 100, 60))
_GREY = (150, 150, 150)
_RED = (40, 40, 230)


@dataclasses.dataclass
class FaceMark:
    face: int
    box: np.ndarray | None  # [x0, y0, x1, y1] pixels, None when the face is not seen in this frame
    emotion: str | None  # None: no_face (or nothing predicted yet)
    probability: float = 0.0
    status: str = "ok"


def draw_marks(bgr: np.ndarray, marks: list[FaceMark]) -> np.ndarray:
    """Draws on `bgr` (in place) and returns it. A frame without any face seen gets a red
    `no_face` mark in its top-left corner."""
    import cv2

    h, w = bgr.shape[:2]
    scale = max(0.5, min(w, h) / 720)
    thick = max(1, int(round(2 * scale)))
    if not any(m.box is not None for m in marks):
        cv2.putText(bgr, "no_face", (int(10 * scale), int(30 * scale)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.9 * scale, _RED, thick + 1, cv2.LINE_AA)
    for m in marks:
        if m.box is None:
            continue
        x0, y0, x1, y1 = (int(round(v)) for v in m.box)
        ok = m.emotion is not None and m.status == "ok"
        colour = _COLOURS[m.face % len(_COLOURS)] if ok else _GREY
        cv2.rectangle(bgr, (x0, y0), (x1, y1), colour, thick)
        label = f"face {m.face}: {m.emotion} {m.probability:.2f}" if ok else f"face {m.face}: {m.status}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, thick)
        ty = max(th + 4, y0 - 6)
        cv2.rectangle(bgr, (x0, ty - th - 4), (x0 + tw + 6, ty + base), colour, -1)
        cv2.putText(bgr, label, (x0 + 3, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (0, 0, 0),
                    thick, cv2.LINE_AA)
        if ok:  # the probability bar under the box: full width = probability 1
            bar_h = max(4, int(8 * scale))
            by = min(h - bar_h - 1, y1 + 4)
            cv2.rectangle(bgr, (x0, by), (x1, by + bar_h), (40, 40, 40), -1)
            cv2.rectangle(bgr, (x0, by), (x0 + int((x1 - x0) * m.probability), by + bar_h), colour, -1)
    return bgr


def _clip_at(result, t: int, first_frame: int, clip_frames: int):
    """The clip of a face's timeline that frame t falls in (the last one past its end), or None."""
    if not result.clips:
        return None
    k = min((t - first_frame) // clip_frames, len(result.clips) - 1)
    return result.clips[k] if k >= 0 else None


def annotate_video(path: str, out_path: str, results, timelines, clip_frames: int,
                   max_frames: int | None = None) -> int:
    """Writes `out_path` (mp4): the video at `path` with each face's box, emotion and probability
    bar per frame, from `predict_video`'s results and `FaceTimelines` (boxes kept). Returns the
    frames written."""
    import cv2

    from vtcaps_tf.face.video import MAX_FRAME_SIDE, open_frames

    by_face = {r.face: r for r in results if r.face is not None}
    # The frames as predict analysed them (a video longer than MAX_FRAME_SIDE is written at it).
    stream = open_frames(path, max_frames=max_frames, max_side=MAX_FRAME_SIDE)
    writer = None
    n = 0
    try:
        for t, rgb in enumerate(stream.frames):
            if writer is None:
                h, w = rgb.shape[:2]
                writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*"mp4v"), stream.fps, (w, h))
                if not writer.isOpened():
                    raise OSError(f"OpenCV cannot write {out_path}")
            marks = []
            for face, track in timelines.tracks.items():
                if not track.first_frame <= t <= track.last_frame:
                    continue
                box = track.boxes.get(t)
                r = by_face.get(face)
                clip = _clip_at(r, t, track.first_frame, clip_frames) if r is not None else None
                if clip is None or clip.status != "ok" or clip.probabilities is None:
                    marks.append(FaceMark(face, box, None, 0.0, "no_face" if clip is not None else "no clip"))
                else:
                    k = int(np.argmax(clip.probabilities))
                    marks.append(FaceMark(face, box, r.classes[k], float(clip.probabilities[k])))
            writer.write(draw_marks(np.ascontiguousarray(rgb[..., ::-1]), marks))
            n += 1
    finally:
        if writer is not None:
            writer.release()
    return n
