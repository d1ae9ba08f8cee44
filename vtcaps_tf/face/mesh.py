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
        return [np.array([(p.x * w, p.y * h) for p in face.landmark[:NUM_MESH_POINTS]], dtype=np.float32)
                for face in result.multi_face_landmarks]

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
