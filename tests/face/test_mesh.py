"""FaceMesh's reading of MediaPipe's landmark lists into pixel arrays."""

import numpy as np

from tests.face.fixtures import face_image
from vtcaps_tf.face import FaceMesh
from vtcaps_tf.face.mesh import NUM_MESH_POINTS, mesh_points


def _landmark_list(points, visibility=None):
    from mediapipe.framework.formats import landmark_pb2

    out = landmark_pb2.NormalizedLandmarkList()
    for k, (x, y, z) in enumerate(points):
        p = out.landmark.add(x=float(x), y=float(y), z=float(z))
        if visibility is not None:
            p.visibility = float(visibility[k])
    return out


def _field_by_field(face, w, h):
    return np.array([(p.x * w, p.y * h) for p in face.landmark[:NUM_MESH_POINTS]], np.float32)


def test_points_read_from_the_bytes_match_the_fields():
    rng = np.random.default_rng(0)
    points = rng.uniform(-0.2, 1.2, (NUM_MESH_POINTS, 3)).astype(np.float32)
    points[5] = 0.0  # a zero is still serialised (proto2 optional field, set)
    face = _landmark_list(points)
    got = mesh_points(face, 300, 256)
    assert got.dtype == np.float32 and got.shape == (NUM_MESH_POINTS, 2)
    np.testing.assert_array_equal(got, _field_by_field(face, 300, 256))
    # Independently: the float32 inputs times the frame size.
    np.testing.assert_allclose(got, points[:, :2] * [300, 256], rtol=1e-6)


def test_lists_with_other_fields_or_more_points_are_read_too():
    rng = np.random.default_rng(1)
    points = rng.uniform(0, 1, (NUM_MESH_POINTS, 3))
    face = _landmark_list(points, visibility=rng.uniform(0, 1, NUM_MESH_POINTS))
    np.testing.assert_array_equal(mesh_points(face, 64, 48), _field_by_field(face, 64, 48))
    refined = _landmark_list(rng.uniform(0, 1, (478, 3)))  # refine_landmarks adds 10 iris points
    got = mesh_points(refined, 64, 48)
    assert got.shape == (NUM_MESH_POINTS, 2)
    np.testing.assert_array_equal(got, _field_by_field(refined, 64, 48))


def test_detect_matches_mediapipe_result_on_the_sample_photo():
    image = face_image(256)
    h, w = image.shape[:2]
    with FaceMesh(video=False) as mesh:
        points = mesh.detect(image)
        result = mesh._mesh.process(image)
    assert points is not None
    np.testing.assert_array_equal(points, _field_by_field(result.multi_face_landmarks[0], w, h))
