"""Dataset sources of the preprocessing job: each module has `discover(root) -> Discovery`."""

from __future__ import annotations

import importlib

from pipeline.sources.base import Discovery, SourceError, VideoItem, split_plan  # noqa: F401

SOURCES = ("folder", "ckplus", "afew", "synthetic")


def discover(source: str, root: str) -> Discovery:
    """List the videos of `root` with the named source's layout."""
    if source not in SOURCES:
        raise SourceError(f"unknown source {source!r}; choose from {', '.join(SOURCES)}")
    return importlib.import_module(f"pipeline.sources.{source}").discover(root)
