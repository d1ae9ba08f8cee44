"""What every source gives the Beam job: the class list and one `VideoItem` per input video,
listed in the main process (cheap directory walks) before any video is decoded; and the split of
every subject (train/val/test), deterministic for a seed."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os

from vtcaps_tf.config.preprocess import normalized_split_ratios, split_ratios_from_text
from vtcaps_tf.data.features import SPLITS
from vtcaps_tf.errors import UsageError

_LOG = logging.getLogger(__name__)


class SourceError(UsageError):
    """The input directory does not hold a dataset of the expected layout (bad input: exit 2)."""


@dataclasses.dataclass(frozen=True)
class VideoItem:
    path: str  # the video file, or the folder of its frames
    video_id: str  # stable id: the path relative to the dataset root
    subject: str
    label_name: str | None  # None: the dataset gives no label for it
    frame_files: tuple[str, ...] | None = None  # explicit frame images (CK+), in order
    landmark_files: tuple[str, ...] | None = None  # the dataset's own 68 landmarks, one per frame
    split: str | None = None  # a split fixed by the dataset (AFEW's Val set); None: by subject
    fps: float | None = None  # frame rate of a frame folder
    dead_reason: str | None = None  # already known to be unusable at listing time
    dead_detail: str = ""


@dataclasses.dataclass
class Discovery:
    source: str
    root: str
    classes: list[str]
    items: list[VideoItem]
    empty_classes: list[str] = dataclasses.field(default_factory=list)
    ignored_files: list[str] = dataclasses.field(default_factory=list)

    def check(self) -> "Discovery":
        """Warn about empty classes; a clear error when no class has a video."""
        for name in self.empty_classes:
            _LOG.warning("class %r has no videos in %s", name, self.root)
        if not any(item.label_name in self.classes for item in self.items):
            raise SourceError(f"no class of {self.root!r} holds any video "
                              f"(source {self.source!r}, classes {self.classes})")
        return self


def relpath(path: str, root: str) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


def visible_entries(folder: str) -> list[str]:
    """Names in a folder, sorted, hidden ones skipped."""
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def require_dir(path: str, what: str) -> str:
    if not os.path.isdir(path):
        raise SourceError(f"{what} {path!r} is not a directory")
    return path


# ---- splits by subject -------------------------------------------------------------------------

def parse_ratios(text_or_seq) -> tuple[float, ...]:
    """'0.7,0.15,0.15' (or a sequence) -> three non-negative ratios summing to 1."""
    if isinstance(text_or_seq, str):
        return normalized_split_ratios(split_ratios_from_text(text_or_seq))
    return normalized_split_ratios(text_or_seq)


def subject_key(subject: str, seed: int) -> str:
    """The subject's place in the shuffled order: a hash of seed and subject id (stable across
    processes and Python versions, unlike `hash()`)."""
    return hashlib.sha256(f"{seed}:{subject}".encode()).hexdigest()


def allocate(n: int, ratios) -> list[int]:
    """How many of `n` subjects each split gets: largest remainders, and at least one for every
    split with a positive ratio while the largest split can spare one."""
    ratios = [float(r) for r in ratios]
    total = sum(ratios)
    exact = [n * r / total for r in ratios]
    counts = [math.floor(e) for e in exact]
    by_remainder = sorted(range(len(ratios)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    for i, r in enumerate(ratios):
        if r > 0 and counts[i] == 0:
            donor = max(range(len(counts)), key=lambda j: (counts[j], -j))
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[i] += 1
    return counts


def assign_splits(subjects, ratios, seed: int, splits=SPLITS) -> dict[str, str]:
    """subject -> split: subjects ordered by `subject_key`, then cut by `allocate`."""
    order = sorted(set(subjects), key=lambda s: (subject_key(s, seed), s))
    counts = allocate(len(order), ratios)
    out, start = {}, 0
    for split, count in zip(splits, counts):
        for subject in order[start:start + count]:
            out[subject] = split
        start += count
    return out


def split_plan(items, ratios, seed: int) -> dict[str, str]:
    """video_id -> split for every item: a split fixed by the dataset wins; the other subjects
    are shared out over the splits that are not fixed by any item."""
    ratios = parse_ratios(ratios)
    fixed = {item.split for item in items if item.split}
    unknown = fixed - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown fixed split(s) {sorted(unknown)}")
    free = [s for s in SPLITS if s not in fixed]
    free_ratios = [ratios[SPLITS.index(s)] for s in free]
    if sum(free_ratios) <= 0:
        free, free_ratios = ["train"], [1.0]
    of_subject = assign_splits((i.subject for i in items if not i.split), free_ratios, seed, free)
    return {item.video_id: item.split or of_subject[item.subject] for item in items}


# ---- K folds by subject ------------------------------------------------------------------------

def assign_folds(clips_of_subject: dict[str, int], folds: int, seed: int) -> dict[str, int]:
    """subject -> fold in 0..folds-1, balanced by clips: subjects in decreasing clip count (ties in
    the seeded hash order of `subject_key`) each go to the fold with the fewest clips so far (ties:
    fewest subjects, then the lowest fold). Deterministic for a seed."""
    if folds < 2:
        raise ValueError(f"--folds must be at least 2, got {folds}")
    if len(clips_of_subject) < folds:
        raise ValueError(f"{folds} folds need at least {folds} subjects, the data has "
                         f"{len(clips_of_subject)}")
    order = sorted(clips_of_subject, key=lambda s: (-clips_of_subject[s], subject_key(s, seed), s))
    load, members, out = [0] * folds, [0] * folds, {}
    for subject in order:
        k = min(range(folds), key=lambda i: (load[i], members[i], i))
        out[subject] = k
        load[k] += clips_of_subject[subject]
        members[k] += 1
    return out
