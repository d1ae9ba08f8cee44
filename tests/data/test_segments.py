"""Records of several clips (`clips.segment_windows`): each frame is stored once, and the reader's
clamped windows over the stored frames give back every clip's frames exactly."""

import numpy as np
import pytest

from vtcaps_tf.data.clips import SHORT_POLICIES, clip_frame_indices, segment_windows, sequence_windows
from vtcaps_tf.data.contract import InputContract


def test_hand_worked_segments():
    # 10 frames, N=4, M=8: clips at 0, 4 and (aligned to the end) 6; windows 0,0,0,1..5 / 2..9 /
    # 4..9,9,9. Two clips a record: the first record stores frames 0..9 (the first window clamped
    # at 0, the second ends at 9), clips at offsets 0 and 4; the second stores 4..9, its clip at 2.
    windows = sequence_windows(10, 4, 8)
    first, second = segment_windows(windows, 10, max_clips=2)
    assert first.frames.tolist() == list(range(10)) and first.offsets == [0, 4]
    assert second.frames.tolist() == [4, 5, 6, 7, 8, 9] and second.offsets == [2]
    # The reader over the second record: short clip 2..5, long window 0..7 clamped to 0..5,
    # i.e. video frames 6..9 and 4..9,9,9.
    short, long = InputContract(4, 8, 8).window_indices(6, 2, 4)
    assert second.frames[short.numpy()].tolist() == [6, 7, 8, 9]
    assert second.frames[long.numpy()].tolist() == [4, 5, 6, 7, 8, 9, 9, 9]


@pytest.mark.parametrize("n, m", [(4, 8), (4, 9), (8, 8), (16, 32)])
@pytest.mark.parametrize("policy", SHORT_POLICIES)
def test_reader_gives_back_every_window(n, m, policy):
    contract = InputContract(n, m, 8)
    for num_frames in (1, 3, 8, 9, 16, 17, 31, 60, 96):
        windows = sequence_windows(num_frames, n, m, policy)
        for max_clips in (1, 2, 3, 8):
            case = f"{num_frames} frames, {max_clips} clips a record"
            segments = segment_windows(windows, num_frames, max_clips)
            assert [w for seg in segments for w in seg.clips] == windows, case  # each clip once, in order
            for seg in segments:
                assert 1 <= len(seg.clips) <= max_clips, case
                if len(seg.clips) > 1:  # a run of the video's frames, each once
                    assert seg.frames.tolist() == list(range(seg.frames[0], seg.frames[-1] + 1)), case
                for w, offset in zip(seg.clips, seg.offsets):
                    short, long = contract.window_indices(len(seg.frames), offset, n)
                    np.testing.assert_array_equal(seg.frames[short.numpy()], clip_frame_indices(w, n), case)
                    np.testing.assert_array_equal(seg.frames[long.numpy()], w.window, case)


def test_a_long_video_stores_each_frame_once():
    # 96 frames, N=16, M=32: 6 clips whose windows cover the video; one segment stores the 96.
    # One-clip records store 4 whole windows of 32 and, at the video's ends, 24 frames each
    # (the 8 edge repeats are not stored): 176.
    windows = sequence_windows(96, 16, 32)
    [seg] = segment_windows(windows, 96, max_clips=8)
    assert len(seg.clips) == 6 and seg.frames.tolist() == list(range(96))
    assert [len(s.frames) for s in segment_windows(windows, 96, max_clips=1)] == [24, 32, 32, 32, 32, 24]


def test_a_short_sequence_keeps_its_resampled_window():
    # 5 frames padded to a clip of 8 (pad_first): the window repeats frame 0; stored as it is.
    [w] = sequence_windows(5, 8, 16, "pad_first")
    [seg] = segment_windows([w], 5, max_clips=8)
    np.testing.assert_array_equal(seg.frames, w.window)
    assert seg.offsets == [w.offset]


def test_max_clips_must_be_positive():
    with pytest.raises(ValueError, match="max_clips"):
        segment_windows(sequence_windows(10, 4, 8), 10, 0)
