"""Whole-sequence clip cutting: every frame of a sequence in a clip, its last frame (CK+'s peak)
always, short sequences brought to length by the documented policies (hand-worked indices)."""

import numpy as np
import pytest

from vtcaps_tf.data.clips import (SHORT_POLICIES, clip_frame_indices, near_peak, sequence_windows,
                                  short_index_map)


@pytest.mark.parametrize("num_frames", [1, 5, 10, 12, 14, 16, 17, 20, 31, 40, 60])
@pytest.mark.parametrize("policy", ["resample", "pad_first", "loop"])
def test_every_frame_and_the_last_one_is_in_a_clip(num_frames, policy):
    windows = sequence_windows(num_frames, 16, 32, policy)
    covered = set()
    for w in windows:
        idx = clip_frame_indices(w, 16)
        assert len(idx) == 16 and len(w.window) == 32
        assert idx.min() >= 0 and idx.max() <= num_frames - 1
        covered |= set(idx.tolist())
    assert num_frames - 1 in covered
    assert covered == set(range(num_frames))  # nothing in between is skipped either
    assert [w.index for w in windows] == list(range(len(windows)))


def test_end_aligned_last_clip_overlaps_the_one_before():
    windows = sequence_windows(20, 8, 8)
    assert [(w.start, w.stop) for w in windows] == [(0, 8), (8, 16), (12, 20)]
    assert len(sequence_windows(16, 8, 8)) == 2  # no remainder: no extra clip


def test_short_policies_hand_worked():
    np.testing.assert_array_equal(short_index_map(5, 8, "resample"), [0, 1, 1, 2, 2, 3, 3, 4])
    np.testing.assert_array_equal(short_index_map(5, 8, "pad_first"), [0, 0, 0, 0, 1, 2, 3, 4])
    np.testing.assert_array_equal(short_index_map(5, 8, "loop"), [2, 3, 4, 0, 1, 2, 3, 4])
    assert short_index_map(5, 8, "drop") is None and sequence_windows(5, 8, 8, "drop") == []
    with pytest.raises(ValueError):
        short_index_map(5, 8, "stretch")
    assert set(SHORT_POLICIES) == {"resample", "pad_first", "loop", "drop"}


def test_short_sequence_long_window_is_centred_on_the_padded_clip():
    # 5 frames padded to 8 (first frame repeated), TPN window of 12 centred: 2 more on each side.
    [w] = sequence_windows(5, 8, 12, "pad_first")
    np.testing.assert_array_equal(w.window, [0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 4, 4])
    assert w.offset == 2 and (w.start, w.stop) == (0, 5)
    np.testing.assert_array_equal(clip_frame_indices(w, 8), [0, 0, 0, 0, 1, 2, 3, 4])


def test_near_peak_keeps_clips_reaching_the_last_third():
    # 30 frames: last third = frames 20..29 (30 - ceil(30/3) = 20).
    windows = sequence_windows(30, 8, 8)
    assert [(w.start, near_peak(w, 30, 8)) for w in windows] == [
        (0, False), (8, False), (16, True), (22, True)]
    # A short sequence's single clip always holds the peak.
    [w] = sequence_windows(10, 16, 16, "resample")
    assert near_peak(w, 10, 16)
