"""Cutting a video into clips: non-overlapping N-frame clips (paper Eq. 1), each with the longer
M-frame window TPN-ERM sees, centred on it (edge frames repeated at the video's ends).

Used by the Beam job and by `vtcaps predict`, so that training and serving cut the same clips.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vtcaps_tf.config.preprocess import CLIP_LABELS, SHORT_POLICIES  # noqa: F401 - the flags' choices


@dataclasses.dataclass(frozen=True)
class ClipWindow:
    index: int  # clip number in the video
    start: int  # first frame of the short clip in the video
    stop: int  # one past its last frame
    window: np.ndarray  # the M frame indices of the long window, into the video
    offset: int  # position of the short clip's first frame inside `window`

    def times(self, fps: float) -> tuple[float, float]:
        """Start and end of the short clip in seconds."""
        return self.start / fps, self.stop / fps


def clip_windows(num_frames: int, clip_frames: int, long_frames: int) -> list[ClipWindow]:
    """All complete non-overlapping clips of `clip_frames` in a video of `num_frames` frames.

    A trailing remainder shorter than a clip is dropped; a video shorter than one clip gives [].
    """
    if clip_frames <= 0 or long_frames < clip_frames:
        raise ValueError("need 0 < clip_frames <= long_frames")
    out = []
    for k in range(num_frames // clip_frames):
        start = k * clip_frames
        # Centre of the long window on the centre of the clip (left-biased for odd differences).
        first = start - (long_frames - clip_frames) // 2
        window = np.clip(np.arange(first, first + long_frames), 0, num_frames - 1)
        out.append(ClipWindow(k, start, start + clip_frames, window, start - first))
    return out


# ---- whole-sequence cutting (the preprocessing job) --------------------------------------------

def short_index_map(num_frames: int, clip_frames: int, policy: str) -> np.ndarray | None:
    """[clip_frames] frame indices of a sequence shorter than a clip, or None for `drop`.

    resample: uniform temporal resampling (first and last frame kept, frames repeated evenly);
    pad_first: the first frame repeated in front (real tempo, a longer neutral onset);
    loop: the sequence repeated backwards from its last frame.
    """
    if policy not in SHORT_POLICIES:
        raise ValueError(f"short policy must be one of {SHORT_POLICIES}, got {policy!r}")
    if num_frames < 1:
        raise ValueError("a sequence needs at least one frame")
    if policy == "drop":
        return None
    k = np.arange(clip_frames)
    if policy == "resample":
        return np.rint(np.linspace(0, num_frames - 1, clip_frames)).astype(np.int64)
    if policy == "pad_first":
        return np.clip(k - (clip_frames - num_frames), 0, num_frames - 1).astype(np.int64)
    return ((k - clip_frames) % num_frames).astype(np.int64)  # loop, ending on the last frame


def sequence_windows(num_frames: int, clip_frames: int, long_frames: int,
                     short_policy: str = "resample") -> list[ClipWindow]:
    """Clips covering a whole sequence, its last frame included.

    Non-overlapping clips from the start (paper Eq. 1), plus, when frames are left over, one more
    clip aligned to the end (overlapping the one before), so the last frame - CK+'s peak - is in a
    clip. A sequence shorter than one clip gives one clip made by `short_policy` (`drop`: none).
    The long TPN window is centred on each clip, edge frames repeated.
    """
    if clip_frames <= 0 or long_frames < clip_frames:
        raise ValueError("need 0 < clip_frames <= long_frames")
    if num_frames < clip_frames:
        base = short_index_map(num_frames, clip_frames, short_policy)
        if base is None:
            return []
        first = -((long_frames - clip_frames) // 2)
        window = base[np.clip(np.arange(first, first + long_frames), 0, clip_frames - 1)]
        return [ClipWindow(0, 0, num_frames, window, -first)]
    starts = list(range(0, num_frames - clip_frames + 1, clip_frames))
    if starts[-1] + clip_frames < num_frames:
        starts.append(num_frames - clip_frames)
    out = []
    for k, start in enumerate(starts):
        first = start - (long_frames - clip_frames) // 2
        window = np.clip(np.arange(first, first + long_frames), 0, num_frames - 1)
        out.append(ClipWindow(k, start, start + clip_frames, window, start - first))
    return out


def clip_frame_indices(w: ClipWindow, clip_frames: int) -> np.ndarray:
    """The short clip's frame indices into the sequence."""
    return w.window[w.offset:w.offset + clip_frames]


def near_peak(w: ClipWindow, num_frames: int, clip_frames: int) -> bool:
    """Whether the short clip reaches into the last third of the sequence (the frames nearest
    the peak): its last frame index >= num_frames - ceil(num_frames / 3)."""
    return int(clip_frame_indices(w, clip_frames).max()) >= num_frames - -(-num_frames // 3)


# ---- records: runs of clips that share their stored frames -------------------------------------

@dataclasses.dataclass(frozen=True)
class SegmentWindows:
    """The clips one record holds: `frames` are the video frame indices stored, in order; clip k's
    short clip starts at `offsets[k]` in them."""

    frames: np.ndarray
    clips: list[ClipWindow]
    offsets: list[int]


def _is_clamped_range(w: ClipWindow, num_frames: int) -> bool:
    """Whether the window is its video's frames around the clip, edge frames repeated (not a
    short sequence's resampled or padded map)."""
    first = w.start - w.offset
    expected = np.clip(np.arange(first, first + len(w.window)), 0, num_frames - 1)
    return np.array_equal(w.window, expected)


def segment_windows(windows: list[ClipWindow], num_frames: int,
                    max_clips: int) -> list[SegmentWindows]:
    """Consecutive clips grouped into records of at most `max_clips`, each storing the video's
    frames from its first clip's long window to its last clip's, once.

    A reader that clamps a clip's long window to the stored frames (`InputContract`) gets back
    the clip's `window` exactly: the stored run starts and ends where the first and last windows
    do, which is where the video does when they are clamped. A window that is not a clamped range
    of the video (a short sequence's resampled or padded frames) is stored alone, as it is.
    """
    if max_clips < 1:
        raise ValueError(f"max_clips must be >= 1, got {max_clips}")
    out: list[SegmentWindows] = []
    run: list[ClipWindow] = []

    def flush():
        if run:
            lo, hi = int(run[0].window.min()), int(max(w.window.max() for w in run)) + 1
            out.append(SegmentWindows(np.arange(lo, hi), list(run), [w.start - lo for w in run]))
            run.clear()

    for w in windows:
        if not _is_clamped_range(w, num_frames):
            flush()
            out.append(SegmentWindows(w.window, [w], [w.offset]))
            continue
        if len(run) == max_clips:
            flush()
        run.append(w)
    flush()
    return out
