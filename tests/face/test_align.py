"""Aligned crops: eyes level, the face box filling the square with the margin, landmarks carried
through the same affine as the pixels."""

import numpy as np
import pytest

from tests.face.fixtures import face_image
from vtcaps_tf.face import FaceMesh, align_face, alignment_matrix, landmarks68


def _rotate(points, degrees, centre):
    a = np.deg2rad(degrees)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (points - centre) @ rot.T + centre


def _template():
    """A plausible 68-point face: the photo's landmarks (found once by MediaPipe)."""
    with FaceMesh(video=False) as mesh:
        return landmarks68(mesh.detect(face_image(160)))


@pytest.fixture(scope="module")
def template():
    return _template()


@pytest.mark.parametrize("degrees", [-25.0, 0.0, 17.0])
def test_eyes_level_and_box_fills_square(template, degrees):
    lm = _rotate(template, degrees, np.array([80.0, 90.0]))
    image = np.zeros((200, 200, 3), np.uint8)
    margin = 0.2
    out = align_face(image, lm, 48, margin=margin).landmarks
    left, right = out[36:42].mean(0), out[42:48].mean(0)
    assert left[1] == pytest.approx(right[1], abs=1e-5)  # eyes level
    assert left[0] < right[0]  # not flipped
    extent = (out.max(0) - out.min(0)).max()
    assert extent == pytest.approx(1.0 / (1.0 + 2.0 * margin), rel=1e-5)
    centre = 0.5 * (out.max(0) + out.min(0))
    np.testing.assert_allclose(centre, [0.5, 0.5], atol=1e-5)
    # A similarity transform: distances between landmarks keep their ratios.
    d_in = np.linalg.norm(lm[8] - lm[27]) / np.linalg.norm(lm[36] - lm[45])
    d_out = np.linalg.norm(out[8] - out[27]) / np.linalg.norm(out[36] - out[45])
    assert d_out == pytest.approx(d_in, rel=1e-5)


def test_pixels_and_landmarks_move_together(template):
    lm = _rotate(template, 12.0, np.array([80.0, 90.0])) + [30.0, 20.0]
    size = 64
    for k in (30, 36, 48, 8):
        image = np.zeros((240, 240, 3), np.uint8)
        x, y = np.rint(lm[k]).astype(int)
        image[y - 1:y + 2, x - 1:x + 2] = 255  # a bright dot on landmark k
        lm_k = lm.copy()
        lm_k[k] = (x, y)
        aligned = align_face(image, lm_k, size)
        peak = np.unravel_index(np.argmax(aligned.crop[..., 0]), (size, size))  # (row, col)
        np.testing.assert_allclose(np.array(peak[::-1]), aligned.landmarks[k] * size, atol=1.0)


def test_matrix_maps_eye_line_to_horizontal(template):
    m = alignment_matrix(_rotate(template, 30.0, np.array([80.0, 90.0])), 32)
    linear = m[:, :2]
    assert np.allclose(linear @ linear.T, (linear[0] @ linear[0]) * np.eye(2))  # rotation x scale


def test_bad_input():
    with pytest.raises(ValueError, match="RGB"):
        align_face(np.zeros((10, 10)), np.zeros((68, 2)), 16)
    with pytest.raises(ValueError, match="68"):
        align_face(np.zeros((10, 10, 3), np.uint8), np.zeros((5, 2)), 16)
    with pytest.raises(ValueError, match="crop_size"):
        alignment_matrix(np.random.rand(68, 2), 0)
