"""A tempo task that only the long window can solve (paper section 3.2, TPN-ERM).

Two classes show the same expression (surprise) rising at the same per-clip speed; they differ in
how long the rise lasts. Each video is `VIDEO_FRAMES` frames; its clips start at `CLIP_STARTS`
(`CLIP_FRAMES` frames each) and each clip's long window is the `LONG_FRAMES` frames centred on it,
the layout of `vtcaps_tf.data.clips` for the tiny preset (N=8, M=16).

- `short_rise`: a linear rise of 9-11 frames that starts at most one frame before the first clip
  and ends at most 10 frames after it: every short clip lies inside the rise, every long window
  sees the face still before the onset and still after the apex.
- `long_rise`: a linear rise of 17-27 frames covering every long window: motion throughout.

Intensity is linear inside the rise, so a short clip of either class shows the same thing: a steady
rise at a speed v and a starting intensity drawn from the same ranges for both classes. Only the
frames beyond the clip (the stops) tell the classes apart: a reader of the short clip is at chance,
a reader of the long window is not (see `benchmarks/ablation.py`, which measures both with a
logistic regression on frame differences).

`generate_arrays` renders the set in memory (frames, 68 landmarks per frame in [0, 1] of the crop)
with `vtcaps_pipeline.synth.render`'s face, subjects and warp; nothing is written to disk.
"""

from __future__ import annotations

import dataclasses

import numpy as np

CLASSES = ("short_rise", "long_rise")
CLIP_FRAMES = 8
LONG_FRAMES = 16
CLIP_STARTS = (4, 6)  # two overlapping clips per video: the onset fits both clips' windows
VIDEO_FRAMES = CLIP_STARTS[-1] + CLIP_FRAMES + (LONG_FRAMES - CLIP_FRAMES) // 2  # 18
SPEED = (0.035, 0.06)  # intensity per frame (1 = the synth's apex), same for both classes
START_INTENSITY = (0.25, 0.45)  # intensity at the first clip's first frame


@dataclasses.dataclass(frozen=True)
class TempoClip:
    label: int  # index into CLASSES
    onset: int  # last frame before the rise (may be before frame 0)
    duration: int  # frames from onset to apex
    speed: float
    start_intensity: float


def window(start: int) -> tuple[int, int]:
    """[first, last] frame of the long window of the clip starting at `start`."""
    first = start - (LONG_FRAMES - CLIP_FRAMES) // 2
    return first, first + LONG_FRAMES - 1


def draw_tempo(label: int, rng: np.random.Generator) -> TempoClip:
    """Onset, duration, speed and level of one video of class `label` (see the module doc)."""
    s, last = CLIP_STARTS[0], CLIP_STARTS[-1]
    speed = float(rng.uniform(*SPEED))
    level = float(rng.uniform(*START_INTENSITY))
    if CLASSES[label] == "short_rise":
        # Inside every clip: onset <= s and onset + D >= last + 7. Both stops visible (a still
        # neighbour inside) in every window: onset >= window(last)[0] + 1, onset + D <= window(s)[1] - 1.
        onset = int(rng.integers(window(last)[0] + 1, s + 1))
        lo, hi = last + CLIP_FRAMES - 1 - onset, window(s)[1] - 1 - onset
    else:
        # Linear over every window: onset <= window(s)[0], onset + D >= window(last)[1].
        onset = int(rng.integers(window(s)[0] - 4, window(s)[0] + 1))
        lo = window(last)[1] - onset
        hi = lo + 6
    return TempoClip(label, onset, int(rng.integers(lo, hi + 1)), speed, level)


def intensity(clip: TempoClip, num_frames: int = VIDEO_FRAMES) -> np.ndarray:
    """[T] expression intensity: still, a linear rise over `duration` frames, still."""
    t = np.clip(np.arange(num_frames), clip.onset, clip.onset + clip.duration)
    return clip.start_intensity + clip.speed * (t - CLIP_STARTS[0])


def clip_indices() -> list[tuple[np.ndarray, np.ndarray]]:
    """(clip frame indices [N], long-window indices [M]) of each clip of a video."""
    return [(np.arange(s, s + CLIP_FRAMES), np.arange(window(s)[0], window(s)[1] + 1))
            for s in CLIP_STARTS]


def generate_arrays(num_videos: int, image_size: int = 32, render_size: int = 64, subjects: int = 10,
                    seed: int = 0, base=None, progress=None, apex_gain: float = 1.0) -> dict:
    """`num_videos` videos, classes alternating, rendered at `render_size` and area-resized to
    `image_size`: {"frames": uint8 [V, T, S, S, 3], "landmarks": float32 [V, T, 68, 2] in [0, 1],
    "labels": int32 [V], "subjects": int32 [V], "onset", "duration", "speed": [V]}.

    Subject k's videos share an identity (videos 2k, 2k+1, 2k + 2K, ... for K subjects: every
    subject shows both classes, so identity says nothing about the class); the clip's head
    pose is fixed with a slight sway (a sway is motion too, and would blur the stops). `base`: a
    `vtcaps_pipeline.synth.render.BaseFace` at `render_size` (found once with MediaPipe when None).

    `apex_gain` scales the expression's displacement (intensity 1 = `apex_gain` times the synth's
    apex), and with it the motion of every frame; the intensity curves stay as drawn. At 1 and
    16 px a frame moves the face by about a tenth of a pixel, which a frame-difference reader
    separates but a 3D CNN trained from scratch on a CPU budget does not pick up (BUILD.md).
    """
    import cv2

    from vtcaps_pipeline.synth import render as synth
    from vtcaps_pipeline.synth import au as synth_au
    from vtcaps_tf.face.landmarks import landmarks68

    if base is None:
        base = synth.prepare_face(synth.load_face_image(None), render_size)
    people = [synth.draw_subject(base, synth.subject_name(i), np.random.default_rng([seed, 11, i]))
              for i in range(subjects)]
    aus = synth_au.EXPRESSIONS["surprise"]
    out = {k: [] for k in ("frames", "landmarks", "labels", "subjects", "onset", "duration", "speed")}
    for i in range(num_videos):
        rng = np.random.default_rng([seed, 12, i])
        label = i % len(CLASSES)
        # Pairs of consecutive videos (one of each class) per subject: with i % subjects, an even
        # number of subjects would give each subject a single class.
        who = (i // len(CLASSES)) % subjects
        subject = people[who]
        tempo = draw_tempo(label, rng)
        pose = synth.draw_clip(CLASSES[label], subject.name, i, aus, (1, 1), render_size, rng)
        pose = dataclasses.replace(pose, drift=tuple(0.2 * d for d in pose.drift),
                                   noise=min(pose.noise, 2.0))
        apex = apex_gain * synth_au.expression_displacement(base.face, aus, pose.gains)
        frames, marks = [], []
        for t, level in enumerate(intensity(tempo)):
            disp = subject.shape + level * apex
            affine = synth.head_affine(base, subject, pose, t)
            img = synth.render_frame(base, disp, affine, subject.tint, pose.brightness, pose.offset,
                                     pose.noise, rng)
            frames.append(cv2.resize(img, (image_size, image_size), interpolation=cv2.INTER_AREA)
                          if image_size != render_size else img)
            mesh = (base.face.points + disp) @ affine[:, :2].T + affine[:, 2]
            marks.append(landmarks68(mesh) / render_size)
        out["frames"].append(np.stack(frames))
        out["landmarks"].append(np.stack(marks).astype(np.float32))
        out["labels"].append(label)
        out["subjects"].append(who)
        out["onset"].append(tempo.onset)
        out["duration"].append(tempo.duration)
        out["speed"].append(tempo.speed)
        if progress:
            progress(i + 1, num_videos)
    dtypes = {"labels": np.int32, "subjects": np.int32, "onset": np.int32, "duration": np.int32,
              "speed": np.float32}
    return {k: np.asarray(v, dtypes.get(k)) for k, v in out.items()}
