"""The 468 -> 68 mapping: the table itself, and the anatomy it gives on a real face photo."""

import numpy as np
import pytest

from tests.face.fixtures import face_image
from vtcaps_tf.face import FaceMesh, landmarks68


def test_table_entries_single_and_paired():
    mesh = np.stack([np.arange(468), 1000 + np.arange(468)], axis=1).astype(np.float32)
    lm = landmarks68(mesh)
    assert lm.shape == (68, 2)
    # Spot checks written from docs/design.md section 4.
    assert lm[0, 0] == 127 and lm[8, 0] == 152 and lm[16, 0] == 356
    assert lm[3, 0] == pytest.approx((132 + 58) / 2) and lm[4, 0] == pytest.approx((58 + 172) / 2)
    assert lm[12, 0] == pytest.approx((397 + 288) / 2)
    assert lm[27, 0] == pytest.approx((168 + 6) / 2) and lm[28, 0] == pytest.approx((197 + 195) / 2)
    assert lm[30, 0] == 4 and lm[36, 0] == 33 and lm[39, 0] == 133 and lm[42, 0] == 362
    assert lm[45, 0] == 263 and lm[48, 0] == 61 and lm[54, 0] == 291 and lm[62, 0] == 13
    assert lm[67, 0] == 87 and lm[67, 1] == 1087


def test_accepts_xyz_and_rejects_wrong_shapes():
    assert landmarks68(np.zeros((468, 3))).shape == (68, 2)
    with pytest.raises(ValueError, match="468"):
        landmarks68(np.zeros((100, 2)))


@pytest.fixture(scope="module")
def photo_landmarks():
    image = face_image(320)
    with FaceMesh(video=False) as mesh:
        points = mesh.detect(image)
    assert points is not None, "MediaPipe finds the face in the sample photo"
    return landmarks68(points), image


def test_anatomy_on_the_sample_photo(photo_landmarks):
    lm, image = photo_landmarks
    h, w = image.shape[:2]
    assert np.all((lm >= 0) & (lm <= [w, h]))
    brows, eyes = lm[17:27, 1].mean(), lm[36:48, 1].mean()
    nose_tip, mouth, chin = lm[30, 1], lm[48:68, 1].mean(), lm[8, 1]
    assert brows < eyes < nose_tip < mouth < chin  # image y grows downward
    # Inner eye corners (39, 42) lie between the outer ones (36, 45), either side of the nose.
    assert lm[36, 0] < lm[39, 0] < lm[30, 0] < lm[42, 0] < lm[45, 0]
    # ... and closer to each other than to the outer corners' span.
    assert abs(lm[42, 0] - lm[39, 0]) < 0.6 * abs(lm[45, 0] - lm[36, 0])
    assert lm[0, 0] < lm[8, 0] < lm[16, 0]  # jaw from image-left to image-right via the chin
    assert lm[48, 0] < lm[51, 0] < lm[54, 0]  # mouth corners either side of the upper lip
    assert lm[62, 1] <= lm[66, 1] + 1.0  # inner upper lip above (or on) the inner lower lip
