"""Streaming face analysis: clips cut as frames arrive are the clips `clip_windows` cuts from the
whole video, gaps are bridged from the nearest detection with a bounded number of raw frames,
boxes are tracked by overlap, and reading a video frame by frame holds one frame at a time."""

import numpy as np
import pytest

from tests.face import fixtures as fx
from vtcaps_tf.data.clips import clip_windows
from vtcaps_tf.data.contract import InputContract
from vtcaps_tf.face import VideoReadError
from vtcaps_tf.face.streaming import ClipCutter, FrameCrop, TrackCropper
from vtcaps_tf.face.tracking import FaceTracker, box_iou
from vtcaps_tf.face.video import open_frames


def _frame_crop(t):
    """A crop whose every pixel is the frame number (mod 256), so indices can be read back."""
    return FrameCrop(np.full((2, 2, 3), t % 256, np.uint8), np.full((68, 2), t, np.float32), t % 3 != 0)


@pytest.mark.parametrize("num_frames, n, m", [(10, 4, 8), (35, 4, 8), (8, 4, 4), (3, 4, 8), (40, 5, 16),
                                              (17, 16, 32), (64, 16, 32)])
def test_clip_cutter_gives_clip_windows(num_frames, n, m):
    cutter = ClipCutter(n, m)
    got, held = [], 0
    for t in range(num_frames):
        cutter.push(_frame_crop(t))
        got += cutter.take()
        held = max(held, cutter.frames_held)
    cutter.finish()
    got += cutter.take()
    want = clip_windows(num_frames, n, m)
    assert [c.window.index for c in got] == [w.index for w in want]
    for c, w in zip(got, want):
        assert (c.window.start, c.window.stop, c.window.offset) == (w.start, w.stop, w.offset)
        np.testing.assert_array_equal(c.window.window, w.window)
        np.testing.assert_array_equal(c.crops[:, 0, 0, 0], w.window % 256)
        np.testing.assert_array_equal(c.landmarks[:, 0, 0], w.window)
        inputs = c.inputs(InputContract(n, m, 2))
        np.testing.assert_array_equal(inputs["long_frames"][:, 0, 0, 0], w.window % 256)
        np.testing.assert_array_equal(inputs["frames"][:, 0, 0, 0], np.arange(w.start, w.stop) % 256)
        np.testing.assert_array_equal(inputs["landmarks"][:, 0, 0], np.arange(w.start, w.stop))
        np.testing.assert_array_equal(c.found, np.arange(w.start, w.stop) % 3 != 0)
    assert held <= m + n  # never the whole video


class _List:
    def __init__(self):
        self.items = []

    def push(self, fc):
        self.items.append(fc)


def _crop_fn(frame, landmarks_px):
    """Records which frame and which landmarks made the crop."""
    return np.full((2, 2, 3), frame[0, 0, 0], np.uint8), np.asarray(landmarks_px, np.float32)


@pytest.mark.parametrize("bridge", [None, 2])
def test_track_cropper_bridges_from_the_nearest_detection(bridge):
    # Detections at 0 and 5 (gap 1-4: 1, 2 nearer 0, the tie 2.5 -> earlier; 3, 4 nearer 5),
    # then at 16 (gap 6-15, longer than the bridge of 2: older frames take frame 5's landmarks).
    found_at = {0: 0.0, 5: 5.0, 16: 16.0}
    sink = _List()
    cropper = TrackCropper(_crop_fn, sink, 2, bridge, whole_video=True)
    for t in range(18):
        frame = np.full((4, 4, 3), t, np.uint8)
        if t in found_at:
            cropper.found(t, frame, np.full((68, 2), found_at[t], np.float32))
        else:
            cropper.missing(t, frame)
        if bridge is not None:
            assert cropper.frames_held <= bridge
    assert cropper.finish()
    assert [int(fc.crop[0, 0, 0]) for fc in sink.items] == list(range(18))  # own pixels, in order
    source = [int(fc.landmarks[0, 0]) for fc in sink.items]
    assert source[:6] == [0, 0, 0, 5, 5, 5]
    if bridge is None:  # exactly the nearest: 6..10 -> 5 (10: tie, earlier), 11..15 -> 16
        assert source[6:17] == [5] * 5 + [16] * 6
    else:  # only the last 2 frames of the gap wait for the next detection
        assert source[6:17] == [5] * 8 + [16] * 3
    assert source[17] == 16  # after the last detection: the last one
    assert [fc.found for fc in sink.items] == [t in found_at for t in range(18)]


def test_track_cropper_of_a_track_drops_frames_after_its_last_detection():
    sink = _List()
    cropper = TrackCropper(_crop_fn, sink, 2, bridge=1)
    for t in range(5):
        frame = np.full((4, 4, 3), t, np.uint8)
        if t < 2:
            cropper.found(t, frame, np.zeros((68, 2), np.float32))
        else:
            cropper.missing(t, frame)
    assert cropper.finish()
    assert [int(fc.crop[0, 0, 0]) for fc in sink.items] == [0, 1]


def test_box_iou_hand_worked():
    a = np.array([0, 0, 10, 10.0])
    assert box_iou(a, a) == 1.0
    assert box_iou(a, np.array([5, 0, 15, 10.0])) == pytest.approx(50 / 150)
    assert box_iou(a, np.array([20, 20, 30, 30.0])) == 0.0


def test_tracker_follows_overlap_and_opens_new_tracks():
    tracker = FaceTracker(max_lost=2)
    left, right = np.array([0, 0, 10, 10.0]), np.array([50, 0, 60, 10.0])
    # Detector order right-to-left: numbering is still left to right.
    assert tracker.update(0, [right, left]) == ([1, 0], [])
    assert tracker.update(1, [left + [2, 0, 2, 0], right + [3, 0, 3, 0]]) == ([0, 1], [])
    assert tracker.update(2, [right + [5, 0, 5, 0]]) == ([1], [])  # face 0 not seen
    # Face 0 was last seen at frame 1: 3 frames before frame 4, more than max_lost = 2: closed.
    assert tracker.update(4, [right + [6, 0, 6, 0]]) == ([1], [0])
    assert 0 not in tracker.open
    assert tracker.update(5, [left]) == ([2], [])  # back after too long: a new track
    assert tracker.close_all() == [1, 2]


def test_open_frames_reads_one_frame_at_a_time_and_checks_length(tmp_path):
    frames = fx.shifted_frames(fx.face_image(64), 12)
    path = fx.write_video(str(tmp_path / "v.avi"), frames, fps=10.0)
    stream = open_frames(path)
    assert stream.fps == pytest.approx(10.0) and stream.promised == 12 and not stream.still
    first = next(stream.frames)
    assert first.ndim == 3 and first.shape[1:] == (64, 3) and first.dtype == np.uint8
    assert 1 + sum(1 for _ in stream.frames) == 12
    with pytest.raises(VideoReadError) as err:
        open_frames(path, max_frames=5)  # the container says 12: refused before decoding
    assert err.value.reason == "too_long" and "--max-frames" in str(err.value)
    assert len(list(open_frames(path, max_frames=12).frames)) == 12


def test_open_frames_of_a_photo(tmp_path):
    import cv2

    path = str(tmp_path / "p.png")
    cv2.imwrite(path, np.full((20, 30, 3), 7, np.uint8))
    stream = open_frames(path)
    assert stream.still and [f.shape for f in stream.frames] == [(20, 30, 3)]


def test_analyze_stream_holds_at_most_the_bridge_of_raw_frames():
    from vtcaps_tf.face import FaceAnalyzer

    frames = fx.shifted_frames(fx.face_image(), 30, seed=2)
    frames[5:25] = 128  # 20 frames without the face
    with FaceAnalyzer(32) as analyzer:
        streamed = analyzer.analyze_stream(iter(frames), bridge=4)
        exact = analyzer.analyze(frames)
    assert streamed.num_frames == 30 and streamed.max_faces == 1
    assert streamed.peak_frames_held <= 4 + 1
    assert streamed.track.found.tolist() == exact.found.tolist()
    # The last 4 frames of the gap waited for the face after it, as the exact nearest-frame fill.
    np.testing.assert_allclose(streamed.track.landmarks[21:], exact.landmarks[21:], atol=1e-6)
    np.testing.assert_allclose(streamed.track.landmarks[:15], exact.landmarks[:15], atol=1e-6)
