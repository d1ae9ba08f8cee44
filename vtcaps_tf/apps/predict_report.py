"""What `vtcaps predict` found, per (video, face), and how it is shown: table, JSON, CSV, plot.

A clip is `ok` (it shows the face: an emotion and its probabilities) or `no_face` (fewer than
half of its frames have the face detected: no emotion). A face's emotion is the class with the
highest mean probability over its `ok` clips, and null when it has none.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os

import numpy as np

OK, NO_FACE = "ok", "no_face"
MAX_PLOT_PANELS = 24


@dataclasses.dataclass
class ClipPrediction:
    index: int
    start: float  # seconds, in the video
    end: float
    status: str = OK  # OK or NO_FACE
    probabilities: np.ndarray | None = None  # [C] when OK


@dataclasses.dataclass
class VideoPrediction:
    """One face of one video (or the video's error, with `face` None)."""

    video: str
    face: int | None = None
    classes: list[str] = dataclasses.field(default_factory=list)
    clips: list[ClipPrediction] = dataclasses.field(default_factory=list)
    fps: float = 0.0
    num_frames: int = 0  # of the video
    start: float = 0.0  # when the face is first and last seen, seconds
    end: float = 0.0
    box: list[float] | None = None  # the face's mean box [x0, y0, x1, y1] in pixels
    single_frame: bool = False  # a photo: one frame, shown to the model as a static clip
    error: str | None = None
    # The video's (or photo's) faces not analysed: [{"reason", "faces", "frames"}]
    # (`face.finder.SkipTally`), the same on every face of the video.
    skipped_faces: list[dict] = dataclasses.field(default_factory=list)

    @property
    def ok_clips(self) -> list[ClipPrediction]:
        return [c for c in self.clips if c.status == OK]

    @property
    def ok(self) -> bool:
        """An emotion was predicted."""
        return self.error is None and bool(self.ok_clips)

    @property
    def mean_probabilities(self) -> np.ndarray:
        return np.mean([c.probabilities for c in self.ok_clips], axis=0)

    @property
    def emotion(self) -> str | None:
        return self.classes[int(np.argmax(self.mean_probabilities))] if self.ok else None

    @property
    def probability(self) -> float | None:
        return float(np.max(self.mean_probabilities)) if self.ok else None

    @property
    def label(self) -> str:
        return self.video if self.face is None else f"{self.video} [face {self.face}]"

    def _probs(self, p) -> dict | None:
        return None if p is None else dict(zip(self.classes, map(float, p)))

    def to_dict(self) -> dict:
        if self.error is not None:
            return {"video": self.video, "face": self.face, "error": self.error,
                    "skipped_faces": self.skipped_faces}
        return {
            "video": self.video, "face": self.face, "emotion": self.emotion,
            "probability": self.probability,
            "probabilities": self._probs(self.mean_probabilities) if self.ok else None,
            "start": self.start, "end": self.end, "box": self.box, "single_frame": self.single_frame,
            "fps": self.fps, "num_frames": self.num_frames, "num_clips": len(self.clips),
            "num_no_face": len(self.clips) - len(self.ok_clips),
            "skipped_faces": self.skipped_faces,
            "clips": [{"clip": c.index, "start": c.start, "end": c.end, "status": c.status,
                       "emotion": (self.classes[int(np.argmax(c.probabilities))]
                                   if c.status == OK else None),
                       "probabilities": self._probs(c.probabilities) if c.status == OK else None}
                      for c in self.clips],
        }


def _describe(r: VideoPrediction) -> str:
    where = "a photo" if r.single_frame else f"{r.start:.2f}-{r.end:.2f} s of {r.num_frames} frames at {r.fps:g} fps"
    gaps = len(r.clips) - len(r.ok_clips)
    head = (f"{r.emotion} ({r.probability:.3f})" if r.ok else "no emotion: no clip shows the face")
    return (f"{r.label}: {head} from {len(r.ok_clips)} clip{'s' if len(r.ok_clips) != 1 else ''}"
            + (f" ({gaps} no_face)" if gaps else "") + f", {where}")


def describe_skipped(skipped: list[dict]) -> str:
    """'skipped faces: 4 over_limit (in 1 frame), ...' or '' when none was skipped."""
    if not skipped:
        return ""
    return "skipped faces: " + ", ".join(
        f"{s['faces']} {s['reason']}" + (f" (at most, in {s['frames']} frames)" if s["frames"] > 1 else "")
        for s in skipped)


def format_table(results: list[VideoPrediction]) -> str:
    out = []
    told = set()
    for r in results:
        if r.skipped_faces and r.video not in told:
            told.add(r.video)
            out.append(f"{r.video}: {describe_skipped(r.skipped_faces)}")
        if r.error is not None:
            out.append(f"{r.label}: no prediction: {r.error}")
            continue
        out.append(_describe(r))
        width = max(8, *(len(c) for c in r.classes)) if r.classes else 8
        out.append("  clip   start     end  status  " + "".join(f"{c:>{width + 1}}" for c in r.classes))
        for c in r.clips:
            cells = ("".join(f"{p:>{width + 1}.3f}" for p in c.probabilities) if c.status == OK
                     else f"{'-- no face --':>{width + 1}}")
            out.append(f"  {c.index:>4} {c.start:7.2f} {c.end:7.2f}  {c.status:<8}{cells}")
    return "\n".join(out) + "\n"


def format_json(results: list[VideoPrediction]) -> str:
    return json.dumps([r.to_dict() for r in results], indent=2) + "\n"


def format_csv(results: list[VideoPrediction]) -> str:
    classes = []
    for r in results:
        classes += [c for c in r.classes if c not in classes]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["video", "face", "clip", "start", "end", "status", "emotion", "probability",
                     *classes, "error"])
    blank = [""] * len(classes)
    for r in results:
        face = "" if r.face is None else r.face
        if r.error is not None:
            writer.writerow([r.video, face, "", "", "", "", "", "", *blank, r.error])
            continue
        for c in r.clips:
            if c.status != OK:
                writer.writerow([r.video, face, c.index, f"{c.start:.3f}", f"{c.end:.3f}", c.status,
                                 "", "", *blank, ""])
                continue
            writer.writerow([r.video, face, c.index, f"{c.start:.3f}", f"{c.end:.3f}", c.status,
                             *_csv_probs(r, c.probabilities, classes), ""])
        if r.ok:
            writer.writerow([r.video, face, "all", f"{r.clips[0].start:.3f}", f"{r.clips[-1].end:.3f}",
                             OK, *_csv_probs(r, r.mean_probabilities, classes), ""])
        else:
            writer.writerow([r.video, face, "all", f"{r.start:.3f}", f"{r.end:.3f}", NO_FACE, "", "",
                             *blank, ""])
    return buf.getvalue()


def _csv_probs(r: VideoPrediction, p: np.ndarray, classes: list[str]) -> list[str]:
    by_class = dict(zip(r.classes, p))
    return [r.classes[int(np.argmax(p))], f"{np.max(p):.6f}",
            *[f"{by_class[c]:.6f}" if c in by_class else "" for c in classes]]


FORMATS = {"table": format_table, "json": format_json, "csv": format_csv}


def plot_timelines(results: list[VideoPrediction], path: str) -> int:
    """Per-clip class probabilities over time, one panel per (video, face) with a prediction (the
    first MAX_PLOT_PANELS, so that the image stays readable); `no_face` clips are grey bands with
    no line through them. Returns the panels drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in results if r.ok][:MAX_PLOT_PANELS]
    if not done:
        return 0
    fig, axes = plt.subplots(len(done), 1, figsize=(8, 2.6 * len(done)), squeeze=False)
    for ax, r in zip(axes[:, 0], done):
        nan = np.full(len(r.classes), np.nan)
        p = np.array([c.probabilities if c.status == OK else nan for c in r.clips])
        if r.single_frame:
            ax.bar(r.classes, p[0], color=[f"C{k}" for k in range(len(r.classes))])
        else:
            t = np.array([c.start for c in r.clips] + [r.clips[-1].end])
            for k, name in enumerate(r.classes):
                ax.step(t, np.append(p[:, k], p[-1, k]), where="post", label=name, color=f"C{k}")
            for c in r.clips:
                if c.status != OK:
                    ax.axvspan(c.start, c.end, color="0.85", zorder=0,
                               label="no face" if c is next(x for x in r.clips if x.status != OK) else None)
            ax.set_xlim(t[0], t[-1])
            ax.legend(loc="upper right", fontsize=8, ncol=min(4, len(r.classes) + 1))
        ax.set_ylim(0, 1)
        ax.set_ylabel("probability")
        name = os.path.basename(r.video.rstrip(os.sep)) + ("" if r.face is None else f" face {r.face}")
        ax.set_title(f"{name}: {r.emotion} ({r.probability:.2f})", fontsize=10)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return len(done)
