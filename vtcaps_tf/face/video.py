"""Reading a video (avi, mp4, mov, mkv, ... or a folder of image frames) into RGB frames."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DEFAULT_FPS = 30.0  # for frame folders, which carry no frame rate
# A container whose header promises more frames than this fraction decodes is called truncated;
# the slack allows for containers (mkv, some mp4) whose frame count is only an estimate.
TRUNCATED_FRACTION = 0.9


class VideoReadError(Exception):
    """A video that cannot be used; `reason` is a short machine-readable word, `detail` prose."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass
class Video:
    frames: np.ndarray  # uint8 [T, H, W, 3] RGB
    fps: float

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


def is_video_file(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def is_image_file(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def list_frame_files(folder: str) -> list[str]:
    """The image files of a frame folder, in name order (hidden files skipped)."""
    return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                  if not n.startswith(".") and is_image_file(n))


def _to_rgb(image: np.ndarray) -> np.ndarray:
    import cv2

    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image(path: str) -> np.ndarray:
    """One image file -> RGB uint8 [H, W, 3] (grey and 16-bit images converted)."""
    import cv2

    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise VideoReadError("unreadable", f"cannot decode image {path}")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    return _to_rgb(image)


def _read_frame_folder(path: str, fps: float | None, max_frames: int | None) -> Video:
    files = list_frame_files(path)
    if not files:
        raise VideoReadError("no_frames", f"folder {path} holds no image files")
    if max_frames:
        files = files[:max_frames]
    frames = [read_image(f) for f in files]
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise VideoReadError("unreadable", f"frames of {path} differ in size: {sorted(shapes)}")
    return Video(np.stack(frames), float(fps or DEFAULT_FPS))


def _read_video_file(path: str, max_frames: int | None) -> Video:
    import cv2

    if os.path.getsize(path) == 0:
        raise VideoReadError("empty_file", f"{path} is 0 bytes")
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise VideoReadError("unreadable", f"OpenCV cannot open {path} as a video")
        promised = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        frames = []
        while not max_frames or len(frames) < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(_to_rgb(frame))
    finally:
        cap.release()
    if not frames:
        raise VideoReadError("no_frames", f"no frame of {path} decodes")
    if not max_frames and promised > 0 and len(frames) < TRUNCATED_FRACTION * promised:
        raise VideoReadError("truncated", f"{path}: {len(frames)} of {promised} frames decode")
    if not (0.0 < fps < 1000.0):
        fps = DEFAULT_FPS
    return Video(np.stack(frames), fps)


def read_video(path: str, fps: float | None = None, max_frames: int | None = None) -> Video:
    """A video file or a folder of image frames -> `Video` (RGB frames, fps).

    `fps` sets the rate of a frame folder (default 30); `max_frames` stops reading early.
    Raises `VideoReadError` with reason missing, empty_file, unreadable, truncated or no_frames.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return _read_frame_folder(path, fps, max_frames)
    if not os.path.exists(path):
        raise VideoReadError("missing", f"{path} does not exist")
    return _read_video_file(path, max_frames)
