"""A synthetic facial-expression video set made from one real face photo (`vtcaps synth`).

MediaPipe finds the photo's 468 mesh points once. Each class moves them by the FACS action units of
its expression (`synth_au.py`), from neutral to apex along a smoothstep that starts at a per-clip
onset and reaches the apex after a class-dependent number of frames; a piecewise-affine field over
the mesh carries the pixels along (`synth_warp.py`). Subjects are the face under a fixed random
identity transform (proportions, shear, face shape, colour tint); every clip adds its own head pose,
slow pose drift, scale, brightness and sensor noise. Output: the `folder` layout
`DIR/<class>/<subject>_<k>.avi` (MJPG) and `DIR/manifest.json`, deterministic for a seed; the
manifest records the settings that made the set (`set_settings`), so that `matches` tells whether
an existing set is the one a config would make.

`--layout ckplus` writes the CK+ layout instead (grey PNG sequences from neutral to the apex frame,
which ends the sequence as CK+'s peak does, and Emotion/ files), `--layout afew` the AFEW one
(Train_AFEW/ and Val_AFEW/ by subject, AFEW's class names, a Neutral class of unmoving faces in
place of contempt): small stand-ins for the real datasets, to try their configs on a CPU.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import sys
import time

import numpy as np

from vtcaps_pipeline.synth import au as synth_au
from vtcaps_pipeline.synth.warp import PiecewiseAffineField
from vtcaps_tf.errors import InputNotFoundError, UsageError

MAX_ONSET = 3  # the expression starts within the first frames, so every clip of a video shows it
LAYOUTS = ("folder", "ckplus", "afew")
MIN_CKPLUS_FRAMES = 6  # a CK+-layout sequence ends at the apex, but holds it up to this length
# Synthetic class -> AFEW class (AFEW has Neutral and no contempt: contempt's clips become Neutral).
AFEW_NAMES = {"anger": "Angry", "disgust": "Disgust", "fear": "Fear", "happy": "Happy",
              "contempt": "Neutral", "sadness": "Sad", "surprise": "Surprise"}
DEFAULT_FACE = "grace_hopper.jpg (matplotlib sample data)"
# A spawned worker takes about a second to start, the time of about ten 128 px videos of 24
# frames: a worker renders at least this many, so that small sets stay in one process.
MIN_VIDEOS_PER_WORKER = 24
SYNTH_CHUNK = 8  # videos per task handed to a worker (the progress line moves by chunks)
MANIFEST_FILE = "manifest.json"
# SynthConfig fields that do not change the videos written: where they go, and how many processes
# render them.
NOT_SETTINGS = ("output", "workers")


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    output: str
    per_class: int = 12
    subjects: int = 10
    seed: int = 0
    tempo_only: bool = False
    face: str | None = None  # None: matplotlib's grace_hopper.jpg
    frames: int = 32
    size: int = 128
    fps: float = 25.0
    layout: str = "folder"
    workers: int = 0  # rendering processes; 0: one per core, for sets large enough to gain

    def __post_init__(self):
        """Settings no set can be made with raise UsageError."""
        if self.layout not in LAYOUTS:
            raise UsageError(f"--layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.layout != "folder" and self.tempo_only:
            raise UsageError("--tempo-only writes the folder layout only")
        if self.per_class < 1 or self.subjects < 1:
            raise UsageError("--per-class and --subjects must be at least 1")
        if self.size < 48:
            raise UsageError(f"--size must be at least 48 px (MediaPipe needs a visible face), got {self.size}")
        if self.fps <= 0:
            raise UsageError("--fps must be positive")
        if self.workers < 0:
            raise UsageError(f"--workers must be >= 0, got {self.workers}")
        need = MAX_ONSET + max(hi for _, hi in self.rise_frames().values()) + 1
        if self.frames < need:
            raise UsageError(f"--frames must be at least {need} so that every class reaches its apex "
                             f"(onset up to {MAX_ONSET} + the slowest rise), got {self.frames}")

    def expressions(self) -> dict[str, tuple[str, ...]]:
        return synth_au.TEMPO_ONLY_EXPRESSIONS if self.tempo_only else synth_au.EXPRESSIONS

    def rise_frames(self) -> dict[str, tuple[int, int]]:
        return synth_au.TEMPO_ONLY_RISE if self.tempo_only else synth_au.RISE_FRAMES

    @property
    def classes(self) -> list[str]:
        return list(self.expressions())


@dataclasses.dataclass
class BaseFace:
    """The neutral face cropped to the output size, its mesh, and the warp built on it."""

    image: np.ndarray  # uint8 [S, S, 3] RGB
    face: synth_au.FaceFrame
    warp: PiecewiseAffineField

    @property
    def centre(self) -> np.ndarray:
        return self.face.points.mean(0)


@dataclasses.dataclass(frozen=True)
class Subject:
    """A synthetic identity: fixed proportions, face shape and colour of one 'person'."""

    name: str
    aspect: float  # horizontal stretch
    shear: float
    scale: float
    tint: tuple[float, float, float]  # per-channel RGB gain
    shape: np.ndarray  # [468, 2] static mesh displacement (pixels)


@dataclasses.dataclass(frozen=True)
class ClipParams:
    """Everything that makes one clip: its expression, tempo and capture conditions."""

    label: str
    subject: str
    index: int
    onset: int  # last neutral frame
    apex: int  # first frame at full intensity
    amplitude: float  # apex intensity
    gains: dict  # per-AU intensity
    angle: float  # head roll, degrees
    shift: tuple[float, float]  # head translation, pixels
    scale: float
    drift: tuple[float, float, float]  # per-clip sway amplitude: degrees, px x, px y
    drift_phase: tuple[float, float, float]
    drift_period: float  # frames
    brightness: float  # gain
    offset: float  # added grey level
    noise: float  # sensor noise sigma, grey levels


def load_face_image(path: str | None = None) -> np.ndarray:
    """The face photo as RGB uint8: `path`, or matplotlib's grace_hopper.jpg."""
    import cv2

    if path is None:
        import matplotlib.cbook

        path = str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    elif not os.path.isfile(path):
        raise InputNotFoundError(f"no face photo {path!r}")
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise UsageError(f"cannot read a face image from {path!r}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def prepare_face(rgb: np.ndarray, size: int) -> BaseFace:
    """Find the face once, crop a square around it (the face fills about half of it), resize to `size`."""
    import cv2

    from vtcaps_tf.face.mesh import FaceMesh

    with FaceMesh(video=False) as mesh:
        points = mesh.detect(rgb)
    if points is None:
        raise UsageError("MediaPipe finds no face in the face image; use a frontal face photo (--face)")
    lo, hi = points.min(0), points.max(0)
    centre = (lo + hi) / 2
    side = 1.9 * float((hi - lo).max())
    x0, y0 = centre - side / 2
    scale = size / side
    # One affine does crop + resize; the reflected border stands in where the crop leaves the photo.
    m = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], np.float64)
    image = cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT101)
    pts = points.astype(np.float64) @ m[:, :2].T + m[:, 2]
    face = synth_au.FaceFrame.from_mesh(pts)
    return BaseFace(image, face, PiecewiseAffineField(pts, size, size))


def draw_subject(base: BaseFace, name: str, rng: np.random.Generator) -> Subject:
    return Subject(
        name=name,
        aspect=float(rng.uniform(0.9, 1.1)),
        shear=float(rng.uniform(-0.07, 0.07)),
        scale=float(rng.uniform(0.94, 1.06)),
        tint=tuple(float(g) for g in rng.uniform(0.9, 1.1, 3)),
        shape=synth_au.identity_displacement(base.face, rng),
    )


def draw_clip(label: str, subject: str, index: int, aus: tuple[str, ...], rise: tuple[int, int],
              size: int, rng: np.random.Generator) -> ClipParams:
    onset = int(rng.integers(0, MAX_ONSET + 1))
    return ClipParams(
        label=label, subject=subject, index=index, onset=onset,
        apex=onset + int(rng.integers(rise[0], rise[1] + 1)),
        amplitude=float(rng.uniform(0.9, 1.2)),
        gains={au: float(rng.uniform(0.8, 1.2)) for au in aus},
        angle=float(rng.uniform(-6, 6)),
        shift=(float(rng.uniform(-0.04, 0.04) * size), float(rng.uniform(-0.04, 0.04) * size)),
        scale=float(rng.uniform(0.92, 1.08)),
        drift=(float(rng.uniform(0, 1.5)), float(rng.uniform(0, 0.01) * size),
               float(rng.uniform(0, 0.01) * size)),
        drift_phase=tuple(float(p) for p in rng.uniform(0, 2 * np.pi, 3)),
        drift_period=float(rng.uniform(20, 60)),
        brightness=float(rng.uniform(0.85, 1.15)),
        offset=float(rng.uniform(-10, 10)),
        noise=float(rng.uniform(1.0, 4.0)),
    )


def intensity_curve(num_frames: int, onset: int, apex: int, amplitude: float = 1.0) -> np.ndarray:
    """[T] expression intensity: 0 up to `onset`, a smoothstep rise, `amplitude` from `apex` on."""
    t = np.arange(num_frames, dtype=np.float64)
    x = np.clip((t - onset) / max(apex - onset, 1), 0.0, 1.0)
    return amplitude * x * x * (3 - 2 * x)


def head_affine(base: BaseFace, subject: Subject, clip: ClipParams | None, t: int) -> np.ndarray:
    """[2, 3] affine of frame t: the subject's proportions, then the clip's head pose and sway."""
    cx, cy = base.centre
    ident = np.array([[subject.aspect * subject.scale, subject.shear * subject.scale, 0],
                      [0, subject.scale, 0], [0, 0, 1]])
    if clip is None:
        angle, sx, sy, scale = 0.0, 0.0, 0.0, 1.0
    else:
        sway = [a * np.sin(2 * np.pi * t / clip.drift_period + p)
                for a, p in zip(clip.drift, clip.drift_phase)]
        angle, sx, sy, scale = (clip.angle + sway[0], clip.shift[0] + sway[1],
                                clip.shift[1] + sway[2], clip.scale)
    a = np.deg2rad(angle)
    pose = np.array([[scale * np.cos(a), -scale * np.sin(a), 0],
                     [scale * np.sin(a), scale * np.cos(a), 0], [0, 0, 1]])
    to_origin = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    back = np.array([[1, 0, cx + sx], [0, 1, cy + sy], [0, 0, 1]])
    return (back @ pose @ ident @ to_origin)[:2]


def render_frame(base: BaseFace, displacement: np.ndarray, affine: np.ndarray | None = None,
                 tint=(1.0, 1.0, 1.0), brightness: float = 1.0, offset: float = 0.0,
                 noise: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """One RGB uint8 frame: the base face with its mesh moved by `displacement` ([468, 2] pixels)."""
    import cv2

    img = base.warp.warp(base.image, base.warp.field(displacement))
    _darken_mouth(img, base.face, displacement)
    if affine is not None:
        s = base.image.shape[0]
        img = cv2.warpAffine(img, affine, (s, s), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT101)
    out = img.astype(np.float32) * (np.asarray(tint, np.float32) * brightness) + offset
    if noise > 0:
        if rng is None:
            raise ValueError("noise needs an rng (deterministic output)")
        out += rng.normal(0.0, noise, out.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _darken_mouth(img: np.ndarray, face: synth_au.FaceFrame, displacement: np.ndarray) -> None:
    """Shade the mouth opening, which the warp alone fills with stretched lip texture."""
    import cv2

    moved = face.points + displacement
    contour = moved[list(synth_au.INNER_LIP_CONTOUR)]
    gap = float((moved[list(synth_au.LOWER_LIP_INNER)][:, 1]
                 - moved[list(synth_au.UPPER_LIP_INNER)][:, 1]).max())
    alpha = np.clip(gap / (0.12 * face.iod), 0.0, 1.0) * 0.8
    if alpha < 0.05:
        return
    mask = np.zeros(img.shape[:2], np.float32)
    cv2.fillPoly(mask, [np.rint(contour).astype(np.int32)], 1.0, lineType=cv2.LINE_AA)
    mask = cv2.GaussianBlur(mask, (3, 3), 0)[..., None] * alpha
    dark = np.array([60, 25, 30], np.float32)  # mouth interior
    img[:] = np.rint(img * (1 - mask) + dark * mask).astype(np.uint8)


def render_clip(base: BaseFace, subject: Subject, clip: ClipParams, aus: tuple[str, ...],
                num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [T, S, S, 3] RGB frames of one clip."""
    apex_disp = synth_au.expression_displacement(base.face, aus, clip.gains)
    curve = intensity_curve(num_frames, clip.onset, clip.apex, clip.amplitude)
    frames = [render_frame(base, subject.shape + s * apex_disp, head_affine(base, subject, clip, t),
                           subject.tint, clip.brightness, clip.offset, clip.noise, rng)
              for t, s in enumerate(curve)]
    return np.stack(frames)


def write_video(path: str, frames: np.ndarray, fps: float) -> None:
    """RGB uint8 [T, H, W, 3] -> an MJPG .avi."""
    import cv2

    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), float(fps), (w, h))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write an MJPG video to {path!r}")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()


def write_layout(config: SynthConfig, label: str, subject: str, number: int, clip: ClipParams,
                 frames: np.ndarray) -> str:
    """Write video `number` (0, 1, ... over the whole set) in the configured layout; returns its
    path relative to the output."""
    import cv2

    if config.layout == "folder":
        rel = f"{label}/{subject}_{clip.index}.avi"
        write_video(os.path.join(config.output, rel), frames, config.fps)
        return rel
    if config.layout == "afew":
        held_out = int(subject[1:]) >= config.subjects - max(1, config.subjects // 5)
        rel = f"{'Val_AFEW' if held_out else 'Train_AFEW'}/{AFEW_NAMES[label]}/{number:06d}.avi"
        os.makedirs(os.path.dirname(os.path.join(config.output, rel)), exist_ok=True)
        write_video(os.path.join(config.output, rel), frames, config.fps)
        return rel
    # CK+: S<subject>/<sequence>, grey PNGs from neutral to the apex, Emotion/ names the last frame.
    from vtcaps_pipeline.beam.sources.ckplus import CLASSES as CK_CLASSES

    ck_subject, seq = f"S{int(subject[1:]) + 1:03d}", f"{number + 1:03d}"
    n = min(len(frames), max(clip.apex + 1, MIN_CKPLUS_FRAMES))
    rel = f"cohn-kanade-images/{ck_subject}/{seq}"
    os.makedirs(os.path.join(config.output, rel), exist_ok=True)
    for t in range(n):
        grey = cv2.cvtColor(frames[t], cv2.COLOR_RGB2GRAY)
        cv2.imwrite(os.path.join(config.output, rel, f"{ck_subject}_{seq}_{t + 1:08d}.png"), grey)
    emo = os.path.join(config.output, "Emotion", ck_subject, seq)
    os.makedirs(emo, exist_ok=True)
    with open(os.path.join(emo, f"{ck_subject}_{seq}_{n:08d}_emotion.txt"), "w") as f:
        f.write(f"   {float(CK_CLASSES.index(label) + 1):.7e}\n")
    return rel


def subject_name(i: int) -> str:
    return f"s{i:02d}"


def worker_count(config: SynthConfig, videos: int) -> int:
    """Processes to render `videos` with: `config.workers`, or (0) one per core, each with at least
    MIN_VIDEOS_PER_WORKER videos, so that a small set does not wait for workers to start."""
    if config.workers:
        return max(1, min(config.workers, videos))
    return max(1, min(os.cpu_count() or 1, videos // MIN_VIDEOS_PER_WORKER))


def render_videos(config: SynthConfig, base: BaseFace, jobs: list[tuple]) -> list[dict]:
    """Render and write the videos of `jobs`, each (number, class index, k, label, AUs, subject);
    returns their manifest entries. A clip depends only on its (seed, class, k), not on the others."""
    rises = config.rise_frames()
    entries = []
    for number, c, k, label, aus, subject in jobs:
        rng = np.random.default_rng([config.seed, 2, c, k])
        clip = draw_clip(label, subject.name, k, aus, rises[label], config.size, rng)
        if config.layout == "afew" and AFEW_NAMES[label] == "Neutral":
            clip = dataclasses.replace(clip, amplitude=0.0)  # a face that does not move
        frames = render_clip(base, subject, clip, aus, config.frames, rng)
        rel = write_layout(config, label, subject.name, number, clip, frames)
        entries.append({"path": rel, "label": label, "subject": subject.name, "onset": clip.onset,
                        "apex": clip.apex, "amplitude": round(clip.amplitude, 4),
                        "aus": list(aus), "head_roll_deg": round(clip.angle, 3),
                        "brightness": round(clip.brightness, 4), "noise": round(clip.noise, 3)})
    return entries


def generate(config: SynthConfig, progress=True) -> dict:
    """Write the whole set; returns the manifest (also written to `output/manifest.json`).

    The videos are rendered by `worker_count` processes, in chunks; the output does not depend on
    their number. The output folder is made first, so that one that cannot be made fails the run
    before the face is analysed."""
    os.makedirs(config.output, exist_ok=True)
    base = prepare_face(load_face_image(config.face), config.size)
    subjects = [draw_subject(base, subject_name(i), np.random.default_rng([config.seed, 1, i]))
                for i in range(config.subjects)]
    expressions, rises = config.expressions(), config.rise_frames()
    jobs = []
    for c, (label, aus) in enumerate(expressions.items()):
        if config.layout == "folder":
            os.makedirs(os.path.join(config.output, label), exist_ok=True)
        for k in range(config.per_class):
            jobs.append((len(jobs), c, k, label, aus, subjects[k % config.subjects]))
    chunks = [jobs[i:i + SYNTH_CHUNK] for i in range(0, len(jobs), SYNTH_CHUNK)]
    start, done = time.monotonic(), 0

    def report(n):
        nonlocal done
        done += n
        if progress:
            print(f"\rsynth: {done}/{len(jobs)} videos ({time.monotonic() - start:.1f} s)",
                  end="\n" if done == len(jobs) else "", file=sys.stderr, flush=True)

    workers = worker_count(config, len(jobs))
    results = []
    if workers == 1:
        for chunk in chunks:
            results.append(render_videos(config, base, chunk))
            report(len(chunk))
    else:
        # Spawned, not forked: the caller may run TensorFlow's threads, which a fork would copy.
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = [pool.submit(render_videos, config, base, chunk) for chunk in chunks]
            for future in concurrent.futures.as_completed(futures):
                report(len(future.result()))
            results = [f.result() for f in futures]
    videos = [entry for chunk in results for entry in chunk]
    manifest = {"classes": config.classes, "fps": config.fps, "frames": config.frames,
                "size": config.size, "tempo_only": config.tempo_only, "seed": config.seed,
                "face": config.face or DEFAULT_FACE, "subjects": [s.name for s in subjects],
                "layout": config.layout, "settings": set_settings(config),
                "rise_frames": {k: list(v) for k, v in rises.items()}, "videos": videos}
    with open(os.path.join(config.output, MANIFEST_FILE), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def set_settings(config: SynthConfig) -> dict:
    """The settings that decide which videos `generate(config)` writes (all but NOT_SETTINGS)."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in NOT_SETTINGS}


def read_manifest(output: str) -> dict | None:
    """The manifest of the set in `output`; None where there is none or it is unreadable."""
    try:
        with open(os.path.join(output, MANIFEST_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def matches(config: SynthConfig, manifest: dict | None) -> bool:
    """Whether `manifest` describes the set `generate(config)` would write (a manifest without
    recorded settings matches nothing)."""
    return manifest is not None and manifest.get("settings") == set_settings(config)
