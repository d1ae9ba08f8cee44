"""Cutting a video into clips: non-overlapping N-frame clips (paper Eq. 1), each with the longer
M-frame window TPN-ERM sees, centred on it (edge frames repeated at the video's ends).

Used by the Beam job and by `vtcaps predict`, so that training and serving cut the same clips.
"""

from __future__ import annotations

import dataclasses

import numpy as np


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
