"""Reading a video (avi, mp4, mov, mkv, ... or a folder of image frames) into RGB frames."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import numpy as np

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DEFAULT_FPS = 30.0  # for frame folders, which carry no frame rate
# A photo longer than this is decoded at a half, a quarter or an eighth of its size (JPEG decodes
# that directly), so that a phone's 6000x4000 photo holds 18 MB, not 72: faces are searched at
# 1920 px anyway (face.finder.DETECT_MAX_SIDE), and the mesh's windows need no more.
MAX_PHOTO_SIDE = 3840
# `vtcaps predict` and `vtcaps stream` downscale a video frame longer than this as it is read: the
# frames a face's gap holds (face.streaming) are then at most 6 MB each, and faces are searched
# at this size anyway.
MAX_FRAME_SIDE = 1920
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


def read_photo(path: str, max_side: int = MAX_PHOTO_SIDE) -> tuple[np.ndarray, int]:
    """A photo -> (RGB uint8 [H, W, 3], the factor it was reduced by: 1, 2, 4 or 8). A JPEG longer
    than `max_side` is decoded at the least reduction that brings it within (at most 8); its size
    is learnt from an eighth-size decode. Other formats decode whole (they cannot decode reduced)."""
    import cv2

    if os.path.splitext(path)[1].lower() not in (".jpg", ".jpeg"):
        return read_image(path), 1
    data = np.fromfile(path, np.uint8)
    small = cv2.imdecode(data, cv2.IMREAD_REDUCED_GRAYSCALE_8)
    if small is None:
        raise VideoReadError("unreadable", f"cannot decode image {path}")
    longest = 8 * max(small.shape[:2])  # within 8 pixels of the photo's own
    factor = next((f for f in (1, 2, 4) if longest <= max_side * f), 8)
    if factor == 1:
        return read_image(path), 1
    flags = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
    image = cv2.imdecode(data, flags[factor])
    if image is None:
        raise VideoReadError("unreadable", f"cannot decode image {path}")
    return _to_rgb(image), factor


@dataclasses.dataclass
class FrameStream:
    """A video opened for reading one frame at a time: `frames` yields RGB uint8 [H, W, 3] frames
    and is consumed once. `still` marks a single image (a photo); `promised` is the container's
    frame count (0 when it has none), an estimate for some formats. `scale`: the file's pixels per
    pixel of the frames (a large photo is decoded reduced, `read_photo`; a large video's frames
    downscaled with `open_frames`' max_side)."""

    path: str
    fps: float
    frames: Iterator[np.ndarray]
    promised: int = 0
    still: bool = False
    scale: float = 1.0


def _too_long(path: str, count: int, limit: int) -> VideoReadError:
    return VideoReadError("too_long", f"{path} has {count} frames, more than the limit of {limit}"
                          " (raise it with --max-frames)")


def _folder_frames(path: str, files: list[str], limit: int | None) -> Iterator[np.ndarray]:
    shape = None
    for k, f in enumerate(files):
        if limit and k >= limit:
            raise _too_long(path, len(files), limit)
        frame = read_image(f)
        if shape is not None and frame.shape != shape:
            raise VideoReadError("unreadable", f"frames of {path} differ in size: {shape} and "
                                 f"{frame.shape} ({os.path.basename(f)})")
        shape = frame.shape
        yield frame


def fit_frame(frame: np.ndarray, max_side: int | None) -> np.ndarray:
    """The frame, area-downscaled so that its longer side is at most `max_side` (None: as it is)."""
    import cv2

    h, w = frame.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return frame
    s = max_side / max(h, w)
    return cv2.resize(frame, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def _file_frames(path: str, cap, promised: int, limit: int | None,
                 max_side: int | None = None) -> Iterator[np.ndarray]:
    n = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            n += 1
            if limit and n > limit:
                raise _too_long(path, max(promised, n), limit)
            yield fit_frame(_to_rgb(frame), max_side)
    finally:
        cap.release()
    if n == 0:
        raise VideoReadError("no_frames", f"no frame of {path} decodes")
    if promised > 0 and n < TRUNCATED_FRACTION * promised:
        raise VideoReadError("truncated", f"{path}: {n} of {promised} frames decode")


def open_frames(path: str, fps: float | None = None, max_frames: int | None = None,
                max_side: int | None = None) -> FrameStream:
    """Open a video file, a frame folder or a still image for reading frame by frame, so that
    only one decoded frame need be in memory at a time.

    `max_frames`: a longer video raises `VideoReadError("too_long")` (at once when the container
    says so, otherwise when the frame past the limit is read). The other reasons are those of
    `read_video`; a truncated file raises when its end is reached. `max_side`: a video file's
    frames longer than this are downscaled as they are read (`scale` says by how much); a photo
    is decoded reduced when large (`read_photo`), whatever `max_side`.
    """
    import cv2

    path = os.fspath(path)
    if os.path.isdir(path):
        files = list_frame_files(path)
        if not files:
            raise VideoReadError("no_frames", f"folder {path} holds no image files")
        if max_frames and len(files) > max_frames:
            raise _too_long(path, len(files), max_frames)
        return FrameStream(path, float(fps or DEFAULT_FPS), _folder_frames(path, files, max_frames),
                           len(files))
    if not os.path.exists(path):
        raise VideoReadError("missing", f"{path} does not exist")
    if os.path.getsize(path) == 0:
        raise VideoReadError("empty_file", f"{path} is 0 bytes")
    if is_image_file(path):
        image, factor = read_photo(path)
        return FrameStream(path, float(fps or DEFAULT_FPS), iter([image]), 1, still=True, scale=factor)
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        cap.release()
        raise VideoReadError("unreadable", f"OpenCV cannot open {path} as a video")
    promised = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    rate = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if not (0.0 < rate < 1000.0):
        rate = DEFAULT_FPS
    if max_frames and promised > max_frames / TRUNCATED_FRACTION:
        cap.release()
        raise _too_long(path, promised, max_frames)
    longest = max(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0, cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    scale = longest / max_side if max_side and longest > max_side else 1
    return FrameStream(path, rate, _file_frames(path, cap, promised, max_frames, max_side), promised,
                       scale=scale)


def read_video(path: str, fps: float | None = None, max_frames: int | None = None) -> Video:
    """A video file or a folder of image frames -> `Video` (all RGB frames in one array, fps).

    `fps` sets the rate of a frame folder (default 30); `max_frames` stops reading early. Holds
    the whole video in memory: long videos are read with `open_frames`.
    Raises `VideoReadError` with reason missing, empty_file, unreadable, truncated or no_frames.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        files = list_frame_files(path)
        if not files:
            raise VideoReadError("no_frames", f"folder {path} holds no image files")
        files = files[:max_frames] if max_frames else files
        stream = FrameStream(path, float(fps or DEFAULT_FPS), _folder_frames(path, files, None))
        return Video(np.stack(list(stream.frames)), stream.fps)
    stream = open_frames(path)
    if max_frames:  # the first frames only: a truncated end is not looked at
        frames = []
        for frame in stream.frames:
            frames.append(frame)
            if len(frames) >= max_frames:
                stream.frames.close()
                break
    else:
        frames = list(stream.frames)
    return Video(np.stack(frames), stream.fps)
