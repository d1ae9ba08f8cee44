"""Clip cutting (paper Eq. 1: non-overlapping N-frame clips) with the centred M-frame TPN window."""

import numpy as np
import pytest

from vtcaps_tf.data.clips import clip_windows


def test_non_overlapping_clips_drop_the_remainder():
    clips = clip_windows(num_frames=20, clip_frames=8, long_frames=8)
    assert [(c.start, c.stop) for c in clips] == [(0, 8), (8, 16)]
    assert [c.index for c in clips] == [0, 1]


def test_long_window_is_centred_and_edge_repeated():
    # 20 frames, N=4, M=8: clip 0 covers 0..3; its window would start at -2 -> frames 0,0,0,1,...,5.
    clips = clip_windows(num_frames=10, clip_frames=4, long_frames=8)
    np.testing.assert_array_equal(clips[0].window, [0, 0, 0, 1, 2, 3, 4, 5])
    assert clips[0].offset == 2
    # clip 1 covers 4..7: window 2..9, the short clip sits at offset 2 inside it.
    np.testing.assert_array_equal(clips[1].window, [2, 3, 4, 5, 6, 7, 8, 9])
    assert clips[1].window[clips[1].offset] == 4
    assert clips[1].times(fps=2.0) == (2.0, 4.0)


def test_video_shorter_than_a_clip_gives_no_clip():
    assert clip_windows(3, 4, 8) == []


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError):
        clip_windows(10, 8, 4)
