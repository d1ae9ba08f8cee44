"""FaceAnalyzer on real face frames: landmarks in crop coordinates, AU maps, filling frames
without a face from the nearest detected frame, and a clear error when there is no face."""

import numpy as np
import pytest

from tests.face import fixtures as fx
from vtcaps_tf.face import FaceAnalyzer, NoFaceError, nearest_found


def test_nearest_found_hand_worked():
    found = np.array([False, True, False, False, True, False])
    # frame 2: 1 away from 1, 2 from 4 -> 1; frame 3: 2 from 1, 1 from 4 -> 4.
    assert nearest_found(found).tolist() == [1, 1, 1, 4, 4, 4]
    assert nearest_found(np.array([True, False, True])).tolist() == [0, 0, 2]  # tie: earlier
    with pytest.raises(NoFaceError):
        nearest_found(np.zeros(3, bool))


@pytest.fixture(scope="module")
def analyzer():
    with FaceAnalyzer(48) as a:
        yield a


def test_track_of_a_moving_face(analyzer):
    frames = fx.shifted_frames(fx.face_image(), 6, seed=1)
    frames[3] = 128  # a grey frame: no face there
    track = analyzer.analyze(frames)
    assert track.found.tolist() == [True, True, True, False, True, True]
    assert track.num_missing == 1
    assert track.crops.shape == (6, 48, 48, 3) and track.crops.dtype == np.uint8
    assert track.landmarks.shape == (6, 68, 2)
    assert np.all((track.landmarks > 0) & (track.landmarks < 1))
    # Eyes level in every aligned crop.
    eyes_y = track.landmarks[:, 36:42, 1].mean(1) - track.landmarks[:, 42:48, 1].mean(1)
    np.testing.assert_allclose(eyes_y, 0.0, atol=1e-4)
    # The missing frame borrows the landmarks of its nearest detected frame (2, the earlier on a
    # tie) but keeps its own pixels (grey).
    np.testing.assert_allclose(track.landmarks[3], track.landmarks[2], atol=1e-6)
    assert np.all(track.crops[3] == 128)


def test_given_landmarks_skip_detection(analyzer):
    frames = np.full((3, 120, 100, 3), 90, np.uint8)  # no face at all: MediaPipe would fail
    lm = np.stack([np.linspace(20, 80, 68), np.linspace(30, 100, 68)], 1).astype(np.float32)
    lm[36:42] = [30, 50]
    lm[42:48] = [70, 50]
    given = np.stack([lm, lm, np.full_like(lm, np.nan)])
    track = analyzer.analyze(frames, landmarks=given)
    assert track.found.tolist() == [True, True, False]
    np.testing.assert_allclose(track.landmarks[2], track.landmarks[1])


def test_no_face_raises(analyzer):
    with pytest.raises(NoFaceError):
        analyzer.analyze(np.full((3, 80, 80, 3), 128, np.uint8))


def test_bad_frames_raise(analyzer):
    with pytest.raises(ValueError, match="RGB frames"):
        analyzer.analyze(np.zeros((3, 80, 80), np.uint8))
    with pytest.raises(ValueError, match="crop_size"):
        FaceAnalyzer(2)


@pytest.mark.parametrize("larger_left", [True, False])
def test_the_subject_is_the_largest_of_two_faces_and_both_are_counted(larger_left):
    """The Beam job's rule (one subject per video, the largest face) whichever side it is on."""
    widths = [150, 90] if larger_left else [90, 150]
    img, boxes = fx.group_scene(widths, size=(640, 360), seed=3)
    frames = np.stack([img] * 3)
    with FaceAnalyzer(48, max_num_faces=1) as a:
        found = a.find(img)
        streamed = a.analyze_stream(iter(frames))
    larger = boxes[int(np.argmax(boxes[:, 2] - boxes[:, 0]))]
    assert len(found.faces) == 1 and [s.reason for s in found.skipped] == ["over_limit"]
    centre = (found.faces[0].box[:2] + found.faces[0].box[2:]) / 2
    assert larger[0] <= centre[0] <= larger[2] and larger[1] <= centre[1] <= larger[3]
    assert streamed.max_faces == 2 and streamed.track.found.all()
