"""Action-unit displacement model for the synthetic expression set.

Each action unit (AU, FACS) moves groups of MediaPipe face-mesh points in a direction given in
face coordinates (x to the image right, y down, unit = the inter-ocular distance, IOD). A point's
displacement from one AU term is `direction * max_a exp(-|p - a|^2 / 2 r^2)` over the term's anchor
points `a`: anchors move fully, neighbours less, far points not at all. Lip terms act on one side of
the mouth line only, because the closed lips' inner contours coincide and a plain Gaussian would
move both lips together.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# MediaPipe mesh index groups. "l" = the face's side at the image left (the subject's right).
EYE_L = (33, 133)
EYE_R = (362, 263)
INNER_BROW_L = (107, 66, 55, 65)
INNER_BROW_R = (336, 296, 285, 295)
OUTER_BROW_L = (70, 63, 46, 53)
OUTER_BROW_R = (300, 293, 276, 283)
MID_BROW_L = (105, 52)
MID_BROW_R = (334, 282)
UPPER_LID_L = (246, 161, 160, 159, 158, 157, 173)
UPPER_LID_R = (398, 384, 385, 386, 387, 388, 466)
LOWER_LID_L = (7, 163, 144, 145, 153, 154, 155)
LOWER_LID_R = (382, 381, 380, 374, 373, 390, 249)
CHEEK_L = (50, 101, 118, 117, 205, 36)
CHEEK_R = (280, 330, 347, 346, 425, 266)
NOSE_WING_L = (129, 64, 98, 48)
NOSE_WING_R = (358, 294, 327, 278)
GLABELLA = (168, 6, 9)
CORNER_L = (61, 78)
CORNER_R = (291, 308)
UPPER_LIP_OUTER = (185, 40, 39, 37, 0, 267, 269, 270, 409)
UPPER_LIP_INNER = (191, 80, 81, 82, 13, 312, 311, 310, 415)
LOWER_LIP_OUTER = (146, 91, 181, 84, 17, 314, 405, 321, 375)
LOWER_LIP_INNER = (95, 88, 178, 87, 14, 317, 402, 318, 324)
CHIN = (152, 148, 176, 149, 377, 400, 378, 199, 175)
# Inner-lip contour in drawing order (the mouth opening, filled dark when the jaw drops).
INNER_LIP_CONTOUR = (78,) + UPPER_LIP_INNER + (308,) + tuple(reversed(LOWER_LIP_INNER))


@dataclasses.dataclass(frozen=True)
class Term:
    """One movement: `anchors` move by `direction` (IOD units); neighbours within ~2 `radius`."""

    anchors: tuple[int, ...]
    direction: tuple[float, float]
    radius: float = 0.12
    side: str | None = None  # "upper" / "lower": only points on that side of the mouth line


def _both(left: tuple[int, ...], right: tuple[int, ...], dx: float, dy: float, radius: float = 0.12,
          side: str | None = None) -> tuple[Term, Term]:
    """A symmetric pair: `dx` points away from the face midline on each side."""
    return (Term(left, (-dx, dy), radius, side), Term(right, (dx, dy), radius, side))


# FACS action units as mesh movements. Amplitudes are exaggerated a little so that the expression
# survives the 32-112 px face crops the models see.
AU_TERMS: dict[str, tuple[Term, ...]] = {
    "AU1": _both(INNER_BROW_L, INNER_BROW_R, 0.0, -0.16, 0.13),  # inner brow raiser
    "AU2": _both(OUTER_BROW_L + MID_BROW_L, OUTER_BROW_R + MID_BROW_R, 0.0, -0.15, 0.13),  # outer brow
    "AU4": _both(INNER_BROW_L + MID_BROW_L, INNER_BROW_R + MID_BROW_R, -0.07, 0.13, 0.13),  # lowerer
    "AU5": _both(UPPER_LID_L, UPPER_LID_R, 0.0, -0.06, 0.06),  # upper lid raiser
    "AU6": (_both(CHEEK_L, CHEEK_R, 0.0, -0.10, 0.16)
            + _both(LOWER_LID_L, LOWER_LID_R, 0.0, -0.04, 0.05)),  # cheek raiser
    "AU7": (_both(LOWER_LID_L, LOWER_LID_R, 0.0, -0.05, 0.05)
            + _both(UPPER_LID_L, UPPER_LID_R, 0.0, 0.02, 0.05)),  # lid tightener
    "AU9": (_both(NOSE_WING_L, NOSE_WING_R, 0.0, -0.08, 0.10)
            + (Term(GLABELLA, (0.0, 0.06), 0.10),)
            + _both(INNER_BROW_L, INNER_BROW_R, -0.03, 0.06, 0.10)),  # nose wrinkler
    "AU10": (Term(UPPER_LIP_OUTER + UPPER_LIP_INNER, (0.0, -0.10), 0.10, "upper"),),  # upper lip raiser
    "AU12": _both(CORNER_L, CORNER_R, 0.18, -0.15, 0.14),  # lip corner puller
    "AU14": _both(CORNER_L, CORNER_R, 0.10, -0.01, 0.10),  # dimpler
    "AU15": _both(CORNER_L, CORNER_R, 0.03, 0.16, 0.13),  # lip corner depressor
    "AU20": _both(CORNER_L, CORNER_R, 0.14, 0.03, 0.14),  # lip stretcher
    "AU23": (_both(CORNER_L, CORNER_R, -0.07, 0.0, 0.10)
             + (Term(UPPER_LIP_OUTER, (0.0, 0.03), 0.08, "upper"),
                Term(LOWER_LIP_OUTER, (0.0, -0.03), 0.08, "lower"))),  # lip tightener
    "AU26": (Term(LOWER_LIP_INNER + LOWER_LIP_OUTER + CHIN, (0.0, 0.26), 0.45, "lower"),),  # jaw drop
}
# One-sided units (contempt): the face's image-right half only.
AU_TERMS["AU12R"] = (AU_TERMS["AU12"][1],)
AU_TERMS["AU14R"] = (AU_TERMS["AU14"][1],)

# The seven CK+ expressions (issue 7) and how fast each reaches its apex (frames after onset).
EXPRESSIONS: dict[str, tuple[str, ...]] = {
    "anger": ("AU4", "AU5", "AU7", "AU23"),
    "contempt": ("AU12R", "AU14R"),
    "disgust": ("AU9", "AU10"),
    "fear": ("AU1", "AU2", "AU4", "AU5", "AU20", "AU26"),
    "happy": ("AU6", "AU12"),
    "sadness": ("AU1", "AU4", "AU15"),
    "surprise": ("AU1", "AU2", "AU5", "AU26"),
}
RISE_FRAMES: dict[str, tuple[int, int]] = {
    "anger": (6, 10), "contempt": (8, 12), "disgust": (7, 11), "fear": (4, 8),
    "happy": (6, 10), "sadness": (10, 16), "surprise": (3, 6),
}
# --tempo-only: one apex appearance, two tempi.
TEMPO_ONLY_EXPRESSIONS = {"surprise_fast": EXPRESSIONS["surprise"],
                          "surprise_slow": EXPRESSIONS["surprise"]}
TEMPO_ONLY_RISE = {"surprise_fast": (3, 5), "surprise_slow": (14, 18)}


@dataclasses.dataclass(frozen=True)
class FaceFrame:
    """Where the face is in an image: mesh points, inter-ocular distance, rotation to face axes."""

    points: np.ndarray  # [468, 2] pixels
    iod: float
    rotation: np.ndarray  # [2, 2]: face-axis vectors -> image vectors (the eye line's roll)

    @classmethod
    def from_mesh(cls, points: np.ndarray) -> "FaceFrame":
        points = np.asarray(points, np.float64)
        if points.shape != (468, 2):
            raise ValueError(f"expected 468 mesh points [468, 2], got {points.shape}")
        eye_l = points[list(EYE_L)].mean(0)
        eye_r = points[list(EYE_R)].mean(0)
        axis = eye_r - eye_l
        iod = float(np.hypot(*axis))
        if iod < 4:
            raise ValueError(f"face too small: inter-ocular distance {iod:.1f} px")
        c, s = axis / iod
        return cls(points, iod, np.array([[c, -s], [s, c]]))

    def mouth_side(self) -> np.ndarray:
        """[468] +1 for points below the mouth line, -1 above, 0 at the corners."""
        pts = self.points
        upper = pts[list(UPPER_LIP_INNER)]
        lower = pts[list(LOWER_LIP_INNER)]
        mids = (upper + lower) / 2
        line = np.concatenate([pts[[78]], mids, pts[[308]]])
        order = np.argsort(line[:, 0])
        line_y = np.interp(pts[:, 0], line[order, 0], line[order, 1])
        side = np.sign(pts[:, 1] - line_y)
        side[list(UPPER_LIP_INNER + UPPER_LIP_OUTER)] = -1
        side[list(LOWER_LIP_INNER + LOWER_LIP_OUTER)] = 1
        side[list(CORNER_L + CORNER_R)] = 0
        return side


def term_displacement(face: FaceFrame, term: Term) -> np.ndarray:
    """[468, 2] pixel displacement of every mesh point by one term."""
    pts = face.points
    anchors = pts[list(term.anchors)]
    d2 = ((pts[:, None, :] - anchors[None, :, :]) ** 2).sum(-1) / face.iod ** 2
    weight = np.exp(-d2 / (2 * term.radius ** 2)).max(axis=1)
    if term.side is not None:
        side = face.mouth_side()
        want = 1 if term.side == "lower" else -1
        weight = weight * np.where(side == want, 1.0, np.where(side == 0, 0.5, 0.0))
    direction = face.rotation @ np.asarray(term.direction, np.float64) * face.iod
    return weight[:, None] * direction[None, :]


def expression_displacement(face: FaceFrame, aus: tuple[str, ...],
                            gains: dict[str, float] | None = None) -> np.ndarray:
    """[468, 2] apex displacement (pixels) of an expression = sum of its AUs (each times its gain)."""
    out = np.zeros_like(face.points)
    for au in aus:
        if au not in AU_TERMS:
            raise ValueError(f"unknown action unit {au!r}; known: {', '.join(AU_TERMS)}")
        g = 1.0 if gains is None else gains.get(au, 1.0)
        for term in AU_TERMS[au]:
            out += g * term_displacement(face, term)
    return out


def identity_displacement(face: FaceFrame, rng: np.random.Generator) -> np.ndarray:
    """[468, 2] static face-shape change of one synthetic subject (brow height, eye size, mouth
    width, jaw width), so that subjects differ in geometry as well as in colour and proportions."""
    iod = face.iod
    pts = face.points
    centre = pts[list(EYE_L + EYE_R)].mean(0)
    out = np.zeros_like(pts)
    brow = rng.uniform(-0.06, 0.06)
    eye = rng.uniform(-0.03, 0.03)
    mouth = rng.uniform(-0.06, 0.06)
    jaw = rng.uniform(-0.06, 0.06)
    for term in (_both(INNER_BROW_L + MID_BROW_L + OUTER_BROW_L,
                       INNER_BROW_R + MID_BROW_R + OUTER_BROW_R, 0.0, brow, 0.15)
                 + _both(UPPER_LID_L, UPPER_LID_R, 0.0, -eye, 0.05)
                 + _both(CORNER_L, CORNER_R, mouth, 0.0, 0.12)):
        out += term_displacement(face, term)
    # Jaw width: points below the nose move sideways in proportion to their offset from the midline.
    below = np.clip((pts[:, 1] - pts[4, 1]) / iod, 0, None)
    out[:, 0] += jaw * (pts[:, 0] - centre[0]) * np.minimum(below, 1.0)
    return out
