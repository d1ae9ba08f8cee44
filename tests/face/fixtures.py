"""Tiny face-video datasets built from matplotlib's sample photo (a real face), for the face and
pipeline tests: folder, synthetic, CK+ and AFEW layouts, and every kind of bad input."""

from __future__ import annotations

import json
import os

import numpy as np


def face_image(width: int = 160) -> np.ndarray:
    """grace_hopper.jpg, RGB, scaled to `width` pixels wide."""
    import cv2
    import matplotlib.cbook as cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        data = np.frombuffer(f.read(), np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    h, w = bgr.shape[:2]
    bgr = cv2.resize(bgr, (width, int(round(h * width / w))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(bgr[..., ::-1])


def shifted_frames(image: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """`n` frames of the image moved by a few pixels each (a face that moves a little)."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    out = []
    for _ in range(n):
        dx, dy = rng.integers(-3, 4, size=2)
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        out.append(cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE))
    return np.stack(out)


def write_video(path: str, frames: np.ndarray, fps: float = 10.0) -> str:
    """RGB frames -> an MJPG .avi."""
    import cv2

    os.makedirs(os.path.dirname(path), exist_ok=True)
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened(), path
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    return path


def write_face_video(path: str, n: int = 8, seed: int = 0, width: int = 160) -> str:
    return write_video(path, shifted_frames(face_image(width), n, seed))


def write_noface_video(path: str, n: int = 8) -> str:
    """Smooth grey gradients: no face anywhere."""
    ramp = np.linspace(60, 180, 160, dtype=np.float32)
    frames = np.stack([np.broadcast_to((ramp[None, :, None] + 5 * k), (120, 160, 3)) for k in range(n)])
    return write_video(path, frames.astype(np.uint8))


def write_truncated_video(path: str, n: int = 12) -> str:
    write_face_video(path, n)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 3])
    return path


def write_bad_files(class_dir: str) -> dict[str, str]:
    """An empty .avi and a text file named .avi; returns {reason: path}."""
    os.makedirs(class_dir, exist_ok=True)
    empty = os.path.join(class_dir, "bad_empty.avi")
    open(empty, "wb").close()
    text = os.path.join(class_dir, "bad_text.avi")
    with open(text, "w") as f:
        f.write("this is not a video\n" * 20)
    return {"empty_file": empty, "unreadable": text}


def write_folder_dataset(root: str, classes=("happy", "sad"), subjects=("s1", "s2", "s3"),
                         per_subject: int = 1, frames: int = 8) -> list[str]:
    """`<root>/<class>/<subject>_<k>.avi`: one good face video per class, subject and k."""
    paths = []
    for ci, name in enumerate(classes):
        for si, subject in enumerate(subjects):
            for k in range(per_subject):
                seed = 100 * ci + 10 * si + k
                paths.append(write_face_video(os.path.join(root, name, f"{subject}_{k}.avi"), frames, seed))
    return paths


def write_synthetic_dataset(root: str, classes=("neutral", "smile"), subjects=("a", "b", "c"),
                            frames: int = 8) -> dict:
    """The synthetic generator's layout: folder tree plus manifest.json."""
    videos = []
    for ci, name in enumerate(classes):
        for si, subject in enumerate(subjects):
            rel = f"{name}/{subject}_0.avi"
            write_face_video(os.path.join(root, rel), frames, seed=ci * 10 + si)
            videos.append({"path": rel, "label": name, "subject": subject})
    manifest = {"classes": list(classes), "fps": 10.0, "frames": frames, "size": 160,
                "tempo_only": False, "seed": 0, "videos": videos}
    with open(os.path.join(root, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return manifest


def write_ckplus_dataset(root: str, sequences, frames: int = 8, landmarks=None) -> None:
    """CK+ layout. `sequences`: [(subject, seq, emotion code or None)]. `landmarks` [68, 2] in
    pixels of the unshifted photo: when given, a Landmarks/ file per frame (shifted with it)."""
    import cv2

    image = face_image()
    for subject, seq, code in sequences:
        img_dir = os.path.join(root, "cohn-kanade-images", subject, seq)
        os.makedirs(img_dir, exist_ok=True)
        rng = np.random.default_rng(hash((subject, seq)) % 1000)
        for t in range(frames):
            dx, dy = (int(v) for v in rng.integers(-3, 4, size=2))
            m = np.float32([[1, 0, dx], [0, 1, dy]])
            frame = cv2.warpAffine(image, m, image.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
            stem = f"{subject}_{seq}_{t + 1:08d}"
            grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)  # CK+ frames are mostly grey
            cv2.imwrite(os.path.join(img_dir, stem + ".png"), grey)
            if landmarks is not None:
                lm_dir = os.path.join(root, "Landmarks", subject, seq)
                os.makedirs(lm_dir, exist_ok=True)
                np.savetxt(os.path.join(lm_dir, stem + "_landmarks.txt"),
                           np.asarray(landmarks) + [dx, dy], fmt="%.7e")
        if code is not None:
            emo_dir = os.path.join(root, "Emotion", subject, seq)
            os.makedirs(emo_dir, exist_ok=True)
            with open(os.path.join(emo_dir, f"{subject}_{seq}_{frames:08d}_emotion.txt"), "w") as f:
                f.write(f"   {float(code):.7e}\n")


def write_afew_dataset(root: str, train=(("Happy", 2), ("Sad", 2)), val=(("Happy", 1),),
                       frames: int = 8) -> None:
    for set_name, spec in (("Train_AFEW", train), ("Val_AFEW", val)):
        for ci, (name, count) in enumerate(spec):
            for k in range(count):
                write_face_video(os.path.join(root, set_name, name, f"{ci:03d}{k:04d}.avi"), frames,
                                 seed=ci * 7 + k + (50 if set_name == "Val_AFEW" else 0))


# Where the face is in grace_hopper.jpg scaled to 512 px wide (the box of the face mesh's 468
# points, rounded out: from the forehead down, so a little taller than the 68 landmarks' box), and
# the cut around it that the composed scenes paste: the face is FACE_IN_CUT[2] -
# FACE_IN_CUT[0] pixels wide in a cut of CUT_SIZE.
_CUT_512 = (90, 60, 440, 420)  # x0, y0, x1, y1 in the 512-px photo
FACE_IN_CUT = (81, 71, 267, 273)  # the face's box inside that cut
CUT_SIZE = (350, 360)  # width, height


def face_cut(face_width: int, flip: bool = False, angle: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """grace_hopper's face and a margin around it, scaled so that the face is `face_width` pixels
    wide, mirrored and/or rotated in the image plane by `angle` degrees -> (RGB cut, the face's
    box [x0, y0, x1, y1] in the cut)."""
    import cv2

    x0, y0, x1, y1 = _CUT_512
    cut = face_image(512)[y0:y1, x0:x1]
    box = np.array(FACE_IN_CUT, np.float64)
    if flip:
        cut = np.ascontiguousarray(cut[:, ::-1])
        box = np.array([CUT_SIZE[0] - box[2], box[1], CUT_SIZE[0] - box[0], box[3]])
    s = face_width / (FACE_IN_CUT[2] - FACE_IN_CUT[0])
    w, h = max(1, round(CUT_SIZE[0] * s)), max(1, round(CUT_SIZE[1] * s))
    cut = cv2.resize(cut, (w, h), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    box = box * s
    if angle:
        m = cv2.getRotationMatrix2D(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), angle, 1.0)
        cut = cv2.warpAffine(cut, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    return cut, box


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A plain scene with no face: smooth colour gradients and a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(60, 180, size=3)
    slope = rng.uniform(-40, 40, size=(3, 2))
    img = np.stack([base[c] + slope[c, 0] * xx / width + slope[c, 1] * yy / height for c in range(3)], -1)
    img += rng.normal(0, 4, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def paste(canvas: np.ndarray, cut: np.ndarray, box: np.ndarray, x: int, y: int) -> np.ndarray:
    """Pastes `cut` with its top-left corner at (x, y), clipped at the canvas's border (in place);
    returns the face's box in canvas pixels."""
    h, w = canvas.shape[:2]
    ch, cw = cut.shape[:2]
    sx0, sy0 = max(0, -x), max(0, -y)
    dx0, dy0 = max(0, x), max(0, y)
    dx1, dy1 = min(w, x + cw), min(h, y + ch)
    if dx1 > dx0 and dy1 > dy0:
        canvas[dy0:dy1, dx0:dx1] = cut[sy0:sy0 + dy1 - dy0, sx0:sx0 + dx1 - dx0]
    return np.asarray(box, np.float64) + [x, y, x, y]


def group_scene(face_widths, size=(1920, 1080), seed: int = 0, positions=None):
    """Faces of the given widths pasted on a `background` of `size` (width, height), each in its
    own cell of a grid (so that no two overlap), every other one mirrored and some rotated by a
    few degrees. `positions`: the top-left corner of each cut, or None for the grid's.
    -> (RGB image, the faces' boxes [n, 4] in pixels)."""
    width, height = size
    img = background(width, height, seed)
    n = len(face_widths)
    cols = int(np.ceil(np.sqrt(n * width / height)))
    rows = int(np.ceil(n / cols))
    cw, ch = width // cols, height // rows
    boxes = []
    for k, fw in enumerate(face_widths):
        cut, box = face_cut(int(fw), flip=k % 2 == 1, angle=(-8, 0, 6)[k % 3])
        if positions is None:
            r, c = divmod(k, cols)
            x = c * cw + (cw - cut.shape[1]) // 2
            y = r * ch + (ch - cut.shape[0]) // 2
        else:
            x, y = positions[k]
        boxes.append(paste(img, cut, box, int(x), int(y)))
    return img, np.array(boxes)


def turned_face(face_width: int, degrees: float, size=(1000, 700), seed: int = 0):
    """The face turned `degrees` about the vertical axis: the photo, as a card turned that far in
    front of a pinhole camera whose focal length equals the distance to the card (a perspective
    warp), on a `background` of `size` -> (RGB image, the unturned face's box in pixels)."""
    import cv2

    cut, box = face_cut(face_width)
    h, w = cut.shape[:2]
    cx = (box[0] + box[2]) / 2
    dist = 3.0 * face_width  # the card's distance, in its own pixels
    th = np.radians(degrees)
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = []
    for x, y in src:
        X, Y = x - cx, y - h / 2
        z = dist + X * np.sin(th)
        dst.append([cx + dist * X * np.cos(th) / z, h / 2 + dist * Y / z])
    m = cv2.getPerspectiveTransform(src, np.float32(dst))
    warped = cv2.warpPerspective(cut, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    img = background(size[0], size[1], seed)
    x, y = (size[0] - w) // 2, (size[1] - h) // 2
    return img, paste(img, warped, box, x, y)


def moving_group_frames(face_widths, num_frames: int, size=(1920, 1080), seed: int = 0,
                        travel=(120, 40)):
    """`group_scene`'s faces moving: each face's cut travels in a straight line, up to `travel`
    (x, y) pixels from its grid place and back (a random direction per face) over the video.
    -> (frames uint8 [T, H, W, 3], boxes [T, n, 4] of each face in each frame)."""
    rng = np.random.default_rng(seed)
    width, height = size
    n = len(face_widths)
    cols = int(np.ceil(np.sqrt(n * width / height)))
    rows = int(np.ceil(n / cols))
    cw, ch = width // cols, height // rows
    cuts = [face_cut(int(fw), flip=k % 2 == 1, angle=(-8, 0, 6)[k % 3]) for k, fw in enumerate(face_widths)]
    homes = []
    for k, (cut, _) in enumerate(cuts):
        r, c = divmod(k, cols)
        homes.append((c * cw + (cw - cut.shape[1]) // 2, r * ch + (ch - cut.shape[0]) // 2))
    direction = rng.choice([-1, 1], size=(n, 2)) * np.array(travel)
    base = background(width, height, seed)
    frames, boxes = [], []
    for t in range(num_frames):
        phase = 1 - abs(2 * t / max(1, num_frames - 1) - 1)  # 0 -> 1 -> 0
        img = base.copy()
        row = []
        for k, (cut, box) in enumerate(cuts):
            x, y = np.array(homes[k]) + np.round(phase * direction[k] / 2).astype(int)
            row.append(paste(img, cut, box, int(x), int(y)))
        frames.append(img)
        boxes.append(row)
    return np.stack(frames), np.array(boxes)
