"""Finding every face of a frame: MediaPipe's full-range detector, then the face mesh on each face.

The full-range BlazeFace (`mp.solutions.face_detection`, `model_selection=1`, inside the wheel)
looks at a 192x192 copy of its input and misses a face under about 7 of those pixels, so an image
longer than `TILE_PIXELS` is also looked at in overlapping tiles of that size (a 24-px face is
then about 10 of the detector's pixels). An image longer than `DETECT_MAX_SIDE` is downscaled for
detection only.

Each face found is cut out of the full-resolution image as a square window (`WINDOW_SCALE` times
the face's size, resampled to `WINDOW_PIXELS`) and the still-image face mesh (short-range
detector + landmark model, one face) runs on that window: the face fills the window as it fills
a selfie, and its 468 points are mapped back to pixels. A face at selfie distance already (at
least `NEAR_FRACTION` of the image's longer side) is meshed on the whole image, as the mesh alone
does it: its landmarks, and so its aligned crop, are exactly those of the mesh alone (a window
would move them by up to about 2% of the face's width, the mesh's own jitter when the image
moves by a pixel).

On a video (`video=True`) the detector runs on the whole frame every `detect_every` frames, with
its tiles every `tiles_every` frames and on the frame after a face is lost; in between each face
is followed by its mesh: the window of the next frame is placed on the landmarks of this one (a
lone face by the mesh's video mode, which starts from the last landmarks instead of detecting; a
lone face at selfie distance by the video mode on the whole frame, as the mesh alone follows it).
While no face is followed the detector looks at every whole frame, so that a face coming into an
empty scene is found at once; a face coming in beside faces followed is found at the next
detection (a small one at the next detection with tiles).

What is not analysed is said (`SkippedFace`): a face narrower than `MIN_FACE_PIXELS`
("too_small"), one beyond the `max_faces` largest ("over_limit"), one turned more than
`MAX_YAW_DEGREES` from the camera ("turned": its landmarks would not be the ones of a frontal
face, and its crop not a face the model was trained on).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vtcaps_tf.face.landmarks import landmarks68

MIN_FACE_PIXELS = 24  # narrowest face analysed, in pixels of the image as detected (below)
DETECT_MAX_SIDE = 1920  # a larger image is downscaled to this for detection (not for the mesh)
TILE_PIXELS = 480  # the side of a detection tile; a longer image is also searched in tiles
TILE_OVERLAP = 120  # pixels shared by neighbouring tiles, so that a face on a seam is whole in one
WINDOW_SCALE = 2.5  # the mesh's window: this many times the face's size, centred on it
WINDOW_PIXELS = 320  # the window's side as the mesh sees it (the face about 128 px wide)
NEAR_FRACTION = 0.25  # a face at least this part of the image's longer side is meshed on the whole image
NEAR_MAX_FACES = 4  # faces that near fit at most this many in one image
MAX_YAW_DEGREES = 45.0  # a face turned further is skipped as "turned"
DETECT_EVERY = 10  # frames between two detections on a video
TILES_EVERY = 30  # frames between two detections with tiles on a video (small faces)
SAME_FACE_IOU = 0.3  # two boxes overlapping more than this (or one's centre in the other) are one face
MIN_DETECTION_CONFIDENCE = 0.5
SKIP_REASONS = ("too_small", "over_limit", "turned")

# Mesh indices of the outer eye corners (iBUG 36 and 45): the head's yaw is the angle of the line
# between them in the mesh's x-z plane.
_EYE_CORNERS = (33, 263)
# The outer eye corners' distance over the distance from their midpoint to the mouth corners'
# midpoint (iBUG 36, 45, 48, 54) on a frontal face (the mesh gives 1.47 on grace_hopper.jpg);
# turning the head by an angle a shrinks it by about cos(a), which the mesh's depth alone misses
# when the face is a flat picture turned.
FRONTAL_EYE_MOUTH_RATIO = 1.45


@dataclasses.dataclass
class FoundFace:
    landmarks: np.ndarray  # float32 [68, 2], pixels of the frame
    box: np.ndarray  # float64 [x0, y0, x1, y1] of the landmarks
    turn: float  # degrees the head is turned from the camera (`head_turn`), 0 facing it


@dataclasses.dataclass
class SkippedFace:
    reason: str  # one of SKIP_REASONS
    box: np.ndarray  # float64 [x0, y0, x1, y1], pixels of the frame


@dataclasses.dataclass
class FrameFaces:
    faces: list[FoundFace]  # largest first
    skipped: list[SkippedFace]

    @property
    def num_seen(self) -> int:
        """Faces in the frame, analysed or not."""
        return len(self.faces) + len(self.skipped)


class SkipTally:
    """What a video's frames left out, per reason: in how many frames, and the most in one frame."""

    def __init__(self):
        self.frames: dict[str, int] = {}
        self.most: dict[str, int] = {}

    def add(self, skipped: list[SkippedFace]) -> None:
        counts: dict[str, int] = {}
        for s in skipped:
            counts[s.reason] = counts.get(s.reason, 0) + 1
        for reason, n in counts.items():
            self.frames[reason] = self.frames.get(reason, 0) + 1
            self.most[reason] = max(self.most.get(reason, 0), n)

    @staticmethod
    def of(skipped: list[SkippedFace]) -> list[dict]:
        """The tally of one frame's skipped faces (`to_list`)."""
        tally = SkipTally()
        tally.add(skipped)
        return tally.to_list()

    def to_list(self) -> list[dict]:
        """[{"reason", "faces": the most in one frame, "frames": frames with any}], in
        SKIP_REASONS order; empty when nothing was left out."""
        return [{"reason": r, "faces": self.most[r], "frames": self.frames[r]}
                for r in SKIP_REASONS if r in self.frames]


def box_iou(a, b) -> float:
    from vtcaps_tf.face.tracking import box_iou as iou

    return iou(a, b)


def same_face(a, b) -> bool:
    """Boxes of one face: overlapping more than SAME_FACE_IOU, or one's centre inside the other."""

    def centre_in(p, q):
        cx, cy = (p[0] + p[2]) / 2, (p[1] + p[3]) / 2
        return q[0] <= cx <= q[2] and q[1] <= cy <= q[3]

    return box_iou(a, b) > SAME_FACE_IOU or centre_in(a, b) or centre_in(b, a)


def _width(box) -> float:
    return float(box[2] - box[0])


def _area(box) -> float:
    return float(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]))


def tile_origins(length: int, tile: int = TILE_PIXELS, overlap: int = TILE_OVERLAP) -> list[int]:
    """Start offsets of tiles of `tile` pixels covering `length` pixels, neighbours sharing at
    least `overlap` (one tile, at 0, when `length` fits in one)."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


class FaceFinder:
    """Every face of a frame (`find`), its 68 landmarks in pixels, largest first. Open once per
    worker or video source, `reset()` between videos, `close()` when done.

    `video`: follow the faces of consecutive frames (detect every `detect_every` frames);
    otherwise every image is searched anew. `max_faces`: the most faces analysed in one frame
    (the largest; the others are skipped as "over_limit"). `tiles_every`: frames between two
    detections with tiles (small faces). `min_face`: narrower faces are skipped
    as "too_small" (pixels of the image as detected)."""

    def __init__(self, video: bool = True, max_faces: int = 1,
                 detect_every: int = DETECT_EVERY, tiles_every: int = TILES_EVERY,
                 min_face: float = MIN_FACE_PIXELS, max_yaw: float = MAX_YAW_DEGREES):
        if max_faces < 1:
            raise ValueError(f"max_faces must be at least 1, got {max_faces}")
        if detect_every < 1 or tiles_every < 1:
            raise ValueError(f"detect_every and tiles_every must be at least 1 frame, got "
                             f"{detect_every} and {tiles_every}")
        import mediapipe as mp  # heavy: imported only when a finder is opened

        self.video = video
        self.max_faces = int(max_faces)
        self.detect_every = int(detect_every)
        self.tiles_every = int(tiles_every)
        self.min_face = float(min_face)
        self.max_yaw = float(max_yaw)
        self._detector = mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=MIN_DETECTION_CONFIDENCE)
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=False,
            min_detection_confidence=MIN_DETECTION_CONFIDENCE)
        self._whole = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=NEAR_MAX_FACES, refine_landmarks=False,
            min_detection_confidence=MIN_DETECTION_CONFIDENCE)
        self._solo = None  # the video-mode mesh following a lone face, opened when first needed
        self.reset()

    def reset(self):
        """Forget the followed faces: the next frame starts a new video."""
        self._frame = 0
        self._followed: list[np.ndarray] = []  # 68 landmarks of each face followed
        self._skipped: list[SkippedFace] = []  # what the last detection left out
        self._lost = False
        self._solo_view = None  # what the video-mode mesh was last fed (`_solo_on`)
        if self._solo is not None:
            self._solo.reset()

    def find(self, rgb: np.ndarray) -> FrameFaces:
        """RGB uint8 image [H, W, 3] -> its faces (`FrameFaces`)."""
        if self._detector is None:
            raise RuntimeError("FaceFinder is closed")
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB image [H, W, 3], got shape {rgb.shape}")
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        # Tiles on every still, every tiles_every-th frame, and after a face is lost; the whole
        # frame alone every detect_every-th frame and, while no face is followed, on every
        # frame, so that a face coming into an empty scene is found at once.
        tiles = not self.video or self._lost or self._frame % self.tiles_every == 0
        detect = tiles or not self._followed or self._frame % self.detect_every == 0
        self._frame += 1
        if detect:
            found = self._detect_and_mesh(rgb, tiles)
        else:
            found = self._follow(rgb)
        if self.video:
            self._followed = [f.landmarks for f in found.faces]
        return found

    def _follow(self, rgb: np.ndarray) -> FrameFaces:
        faces, skipped = [], list(self._skipped)
        near = _Near(self, rgb)
        # One face followed (the usual video): the mesh's video mode on its window, which skips
        # the mesh's own detector by starting from the last frame's landmarks. Several: one
        # still-image mesh for all (a video-mode graph per face would cost ~20 MB each).
        lone = len(self._followed) == 1
        for lm in self._followed:
            box = _landmark_box(lm)
            if lone and near.is_near(box):
                # A lone face at selfie distance (a CK+ sequence, a webcam): the video-mode mesh
                # on the whole frame, as the mesh alone follows it, at half the still mesh's cost.
                got = self._solo_whole(rgb, box) or near.face(box)
            else:
                got = near.face(box) or self._mesh_window(rgb, box, self._solo_on("window") if lone else None)
            if got is None:
                self._lost = True
            elif got.turn > self.max_yaw:
                skipped.append(SkippedFace("turned", got.box))
                self._lost = True
            elif not any(same_face(got.box, f.box) for f in faces):
                faces.append(got)
        faces.sort(key=lambda f: -_area(f.box))
        return FrameFaces(faces, skipped)

    def _detect_and_mesh(self, rgb: np.ndarray, tiles: bool = True) -> FrameFaces:
        self._lost = False
        candidates = [_landmark_box(lm) for lm in self._followed]
        for box in self.detect(rgb, tiles):
            if not any(same_face(box, c) for c in candidates):
                candidates.append(box)
        scale = _detect_scale(rgb.shape)
        faces, skipped = [], []
        near = _Near(self, rgb)
        for box in sorted(candidates, key=lambda b: -_area(b)):
            if _width(box) * scale < self.min_face:
                skipped.append(SkippedFace("too_small", box))
                continue
            if len(faces) >= self.max_faces:
                skipped.append(SkippedFace("over_limit", box))
                continue
            got = near.face(box) or self._mesh_window(rgb, box)
            if got is None:  # the detector's box held no face the mesh could fit
                continue
            if got.turn > self.max_yaw:
                skipped.append(SkippedFace("turned", got.box))
            elif not any(same_face(got.box, f.box) for f in faces):
                faces.append(got)
        faces.sort(key=lambda f: -_area(f.box))
        if self._solo is not None and not (len(faces) == 1 and len(self._followed) == 1 and same_face(
                faces[0].box, _landmark_box(self._followed[0]))):
            self._solo.reset()  # the lone face followed is not the same one
        # Faces left out stay reported on the frames followed until the next detection.
        self._skipped = [s for s in skipped if s.reason != "turned"]
        return FrameFaces(faces, skipped)

    def detect(self, rgb: np.ndarray, tiles: bool = True) -> list[np.ndarray]:
        """The detector's face boxes [x0, y0, x1, y1] in pixels of `rgb`: the whole image and, with
        `tiles` and when it is larger than a tile, every tile; one box per face."""
        import cv2

        h, w = rgb.shape[:2]
        scale = _detect_scale(rgb.shape)
        small = rgb if scale == 1.0 else cv2.resize(
            rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        sh, sw = small.shape[:2]
        boxes, scores = [], []
        views = [(0, 0, small)]
        if tiles and max(sh, sw) > TILE_PIXELS:
            views += [(x, y, small[y:y + TILE_PIXELS, x:x + TILE_PIXELS])
                      for y in tile_origins(sh) for x in tile_origins(sw)]
        for x, y, view in views:
            vh, vw = view.shape[:2]
            result = self._detector.process(np.ascontiguousarray(view))
            for d in result.detections or ():
                r = d.location_data.relative_bounding_box
                box = np.array([x + r.xmin * vw, y + r.ymin * vh, x + (r.xmin + r.width) * vw,
                                y + (r.ymin + r.height) * vh], np.float64) / scale
                boxes.append(box)
                scores.append(float(d.score[0]) if d.score else 0.0)
        kept: list[np.ndarray] = []
        for k in np.argsort(scores, kind="stable")[::-1]:
            if not any(same_face(boxes[k], b) for b in kept):
                kept.append(boxes[k])
        return kept

    def _mesh_whole(self, rgb: np.ndarray, mesh=None) -> list[FoundFace]:
        """The mesh (`mesh`, or the still-image one) on the whole image -> the faces it finds
        there (at most NEAR_MAX_FACES)."""
        from vtcaps_tf.face.mesh import mesh_points_3d

        h, w = rgb.shape[:2]
        result = (mesh or self._whole).process(rgb)
        out = []
        for face in result.multi_face_landmarks or ():
            pts = mesh_points_3d(face, w, h)
            lm = landmarks68(pts)
            out.append(FoundFace(lm, _landmark_box(lm), head_turn(pts, lm)))
        return out

    def _solo_on(self, view: str):
        """The video-mode mesh (opened when first needed), fed `view` ("whole" frames or face
        "window"s): what it follows is in the coordinates of its last input, so it starts afresh
        when the view changes."""
        if self._solo is None:
            import mediapipe as mp

            self._solo = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=False, max_num_faces=1, refine_landmarks=False,
                min_detection_confidence=MIN_DETECTION_CONFIDENCE)
            self._solo_view = view
        elif self._solo_view != view:
            self._solo.reset()
            self._solo_view = view
        return self._solo

    def _solo_whole(self, rgb: np.ndarray, box: np.ndarray) -> FoundFace | None:
        """The video-mode mesh's face on the whole frame when it is the one at `box` (its own
        detector, after a reset, may pick another face of the frame), else None."""
        faces = self._mesh_whole(rgb, self._solo_on("whole"))
        return faces[0] if faces and same_face(box, faces[0].box) else None

    def _mesh_window(self, rgb: np.ndarray, box: np.ndarray, mesh=None) -> FoundFace | None:
        """The mesh (`mesh`, or the still-image one) on a window centred on `box` -> the face
        there, or None."""
        import cv2

        from vtcaps_tf.face.mesh import mesh_points_3d

        side = max(1, int(round(WINDOW_SCALE * max(box[2] - box[0], box[3] - box[1], 1.0))))
        x0 = int(round((box[0] + box[2]) / 2 - side / 2))
        y0 = int(round((box[1] + box[3]) / 2 - side / 2))
        h, w = rgb.shape[:2]
        # The window cut at full resolution (black beyond the image), then resized with area
        # averaging when it shrinks, so that a large face is not aliased.
        square = np.zeros((side, side, 3), np.uint8)
        cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
        if cx1 > cx0 and cy1 > cy0:
            square[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = rgb[cy0:cy1, cx0:cx1]
        interp = cv2.INTER_AREA if side > WINDOW_PIXELS else cv2.INTER_LINEAR
        window = cv2.resize(square, (WINDOW_PIXELS, WINDOW_PIXELS), interpolation=interp)
        scale = WINDOW_PIXELS / side
        result = (mesh or self._mesh).process(window)
        if not result.multi_face_landmarks:
            return None
        pts = mesh_points_3d(result.multi_face_landmarks[0], WINDOW_PIXELS, WINDOW_PIXELS)
        xy = pts[:, :2].astype(np.float64) / scale + (x0, y0)
        lm = landmarks68(xy)
        return FoundFace(lm, _landmark_box(lm), head_turn(pts, lm))

    def close(self):
        if self._detector is not None:
            self._detector.close()
            self._mesh.close()
            self._whole.close()
            if self._solo is not None:
                self._solo.close()
            self._detector = self._mesh = self._whole = self._solo = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Near:
    """The faces at selfie distance of one image, meshed on the whole image once, when the first
    such face is asked for."""

    def __init__(self, finder: FaceFinder, rgb: np.ndarray):
        self.finder, self.rgb = finder, rgb
        self.min_size = NEAR_FRACTION * max(rgb.shape[:2])
        self.faces: list[FoundFace] | None = None

    def is_near(self, box: np.ndarray) -> bool:
        return max(box[2] - box[0], box[3] - box[1]) >= self.min_size

    def face(self, box: np.ndarray) -> FoundFace | None:
        """The whole-image mesh's face at `box` when the face is near, else None."""
        if not self.is_near(box):
            return None
        if self.faces is None:
            self.faces = self.finder._mesh_whole(self.rgb)
        matches = [f for f in self.faces if same_face(box, f.box)]
        return max(matches, key=lambda f: box_iou(box, f.box)) if matches else None


def head_turn(mesh_xyz: np.ndarray, landmarks: np.ndarray) -> float:
    """How far (degrees, either side) a head is turned from the camera: the larger of the yaw of
    the mesh's eye line in depth and the arc cosine of the 2-D eye-to-mouth proportion over a
    frontal face's (`FRONTAL_EYE_MOUTH_RATIO`)."""
    a, b = mesh_xyz[_EYE_CORNERS[0]], mesh_xyz[_EYE_CORNERS[1]]
    depth_yaw = abs(float(np.degrees(np.arctan2(b[2] - a[2], b[0] - a[0]))))
    lm = np.asarray(landmarks, np.float64)
    eyes = np.linalg.norm(lm[45] - lm[36])
    drop = np.linalg.norm((lm[36] + lm[45]) / 2 - (lm[48] + lm[54]) / 2)
    ratio = eyes / max(drop, 1e-6) / FRONTAL_EYE_MOUTH_RATIO
    shape_yaw = float(np.degrees(np.arccos(np.clip(ratio, 0.0, 1.0))))
    return max(depth_yaw, shape_yaw)


def _detect_scale(shape) -> float:
    return min(1.0, DETECT_MAX_SIDE / max(shape[0], shape[1]))


def _landmark_box(lm: np.ndarray) -> np.ndarray:
    from vtcaps_tf.face.tracking import landmark_box

    return landmark_box(lm)
