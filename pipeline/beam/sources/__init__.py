"""Dataset sources of the preprocessing job: each module has `discover(root) -> Discovery`."""

from __future__ import annotations

import importlib

from vtcaps_pipeline.beam.sources.base import Discovery, SourceError, VideoItem, split_plan  # noqa: F401
from vtcaps_tf.config.preprocess import SOURCES  # defined with the --source flag


def discover(source: str, root: str) -> Discovery:
    """List the videos of `root` with the named source's layout."""
    if source not in SOURCES:
        raise SourceError(f"unknown source {source!r}; choose from {', '.join(SOURCES)}")
    return importlib.import_module(f"vtcaps_pipeline.beam.sources.{source}").discover(root)
