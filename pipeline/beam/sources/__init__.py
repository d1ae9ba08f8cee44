"""Dataset sources of the preprocessing job: each module has `discover(root) -> Discovery`."""

from __future__ import annotations

import importlib

from vtcaps_pipeline.beam.options import SOURCES  # noqa: F401 - defined with the --source flag
from vtcaps_pipeline.beam.sources.base import Discovery, SourceError, VideoItem, split_plan  # noqa: F401

# Per source: (policy for a sequence shorter than a clip, which clips carry the video's label);
# see vtcaps_tf/data/clips.py and BUILD.md. CK+ sequences run neutral onset -> peak and only the
# peak is labelled: the first frame is repeated in front (real tempo, a longer neutral onset) and
# only clips reaching the last third are labelled. The others hold the expression throughout.
TEMPORAL_DEFAULTS = {
    "ckplus": ("pad_first", "near_peak"),
    "afew": ("resample", "all"),
    "folder": ("resample", "all"),
    "synthetic": ("resample", "all"),
}


def discover(source: str, root: str) -> Discovery:
    """List the videos of `root` with the named source's layout."""
    if source not in SOURCES:
        raise SourceError(f"unknown source {source!r}; choose from {', '.join(SOURCES)}")
    return importlib.import_module(f"vtcaps_pipeline.beam.sources.{source}").discover(root)
