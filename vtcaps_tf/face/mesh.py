"""MediaPipe face mesh (the models inside the mediapipe 0.10.21 wheel; nothing is downloaded)."""

from __future__ import annotations

import numpy as np

NUM_MESH_POINTS = 468


class FaceMesh:
    """One MediaPipe face-mesh graph. Open once per worker (`DoFn.setup()`), reuse for every frame.

    `video=True` tracks the face from frame to frame (faster on a video); `video=False` detects it
    anew in every image. `max_num_faces` bounds how many faces one image gives.
    """

    def __init__(self, video: bool = True, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, max_num_faces: int = 1):
        if max_num_faces < 1:
            raise ValueError(f"max_num_faces must be at least 1, got {max_num_faces}")
        import mediapipe as mp  # heavy: imported only when a mesh is opened

        self.video = video
        self.max_num_faces = int(max_num_faces)
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=not video, max_num_faces=self.max_num_faces, refine_landmarks=False,
            min_detection_confidence=min_detection_confidence,
            min_tracking_confidence=min_tracking_confidence)

    def detect(self, rgb: np.ndarray) -> np.ndarray | None:
        """RGB uint8 image [H, W, 3] -> the 468 mesh points in pixels [468, 2] (x, y), or None."""
        faces = self.detect_all(rgb)
        return faces[0] if faces else None

    def detect_all(self, rgb: np.ndarray) -> list[np.ndarray]:
        """RGB uint8 image [H, W, 3] -> the mesh points [468, 2] in pixels of every face found
        (at most `max_num_faces`), in MediaPipe's order."""
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB image [H, W, 3], got shape {rgb.shape}")
        result = self._mesh.process(np.ascontiguousarray(rgb, dtype=np.uint8))
        if not result.multi_face_landmarks:
            return []
        h, w = rgb.shape[:2]
        return [mesh_points(face, w, h) for face in result.multi_face_landmarks]

    def reset(self):
        """Forget the tracked face, so that the next video starts fresh (and results do not depend
        on which video this worker saw before)."""
        if self._mesh is not None:
            self._mesh.reset()

    def close(self):
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# One NormalizedLandmark inside a serialised NormalizedLandmarkList when only x, y and z are set (as
# the face mesh sets them): the entry's key and length, then key + float32 for each of x, y, z.
_LANDMARK_WIRE = np.dtype([("key", "u1"), ("size", "u1"), ("x_key", "u1"), ("x", "<f4"),
                           ("y_key", "u1"), ("y", "<f4"), ("z_key", "u1"), ("z", "<f4")])
_WIRE_KEYS = {"key": 0x0A, "size": 15, "x_key": 0x0D, "y_key": 0x15, "z_key": 0x1D}


def mesh_points(face, width: int, height: int) -> np.ndarray:
    """A NormalizedLandmarkList -> its first 468 points in pixels [468, 2] float32 (x, y)."""
    return np.ascontiguousarray(mesh_points_3d(face, width, height)[:, :2])


def mesh_points_3d(face, width: int, height: int) -> np.ndarray:
    """A NormalizedLandmarkList -> its first 468 points [468, 3] float32: x, y in pixels and the
    depth z in the units of x (MediaPipe scales z as it scales x, by the image's width).

    Reads the points from the list's serialised bytes in one numpy view: reading 468 landmarks
    field by field through the protobuf objects costs ~4x more, a twelfth of the mesh's own time.
    A list serialised any other way (other fields set) is read field by field.
    """
    raw = face.SerializeToString()
    if len(raw) % _LANDMARK_WIRE.itemsize == 0:
        wire = np.frombuffer(raw, _LANDMARK_WIRE)
        if len(wire) >= NUM_MESH_POINTS and all(np.all(wire[k] == v) for k, v in _WIRE_KEYS.items()):
            xyz = np.stack([wire[k][:NUM_MESH_POINTS] for k in ("x", "y", "z")], axis=1)
            return (xyz.astype(np.float64) * (width, height, width)).astype(np.float32)
    return np.array([(p.x * width, p.y * height, p.z * width) for p in face.landmark[:NUM_MESH_POINTS]],
                    dtype=np.float32)
