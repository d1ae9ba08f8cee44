"""Version folders under a model's base path, read as TF Serving reads them.

The one definition both sides use: export picks the next free version number from it
(`vtcaps_tf.export.saved_model`), serving decides which versions are ready to load (`vtcaps_tf.serving`).
TensorFlow is imported on use (tf.io.gfile reads local and gs:// paths alike).
"""

from __future__ import annotations

import logging
import os
import re

log = logging.getLogger(__name__)

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
_VERSION_NAME = re.compile(r"[0-9]+")
_MAX_VERSION = 2 ** 63 - 1  # versions are int64 in TF Serving's protos


def parse_version(name: str) -> int | None:
    """A version folder's number, or None for a name that is not one.

    As TF Serving reads folder names: any run of ASCII digits, leading zeros allowed (its own test
    data uses `00000123`), up to int64's largest value (timestamps such as 1712345678901 fit)."""
    if not _VERSION_NAME.fullmatch(name):
        return None
    value = int(name)
    return value if value <= _MAX_VERSION else None


def version_dirs(base_path: str, ready: bool = True) -> dict[int, str]:
    """{version: folder name} of the version folders under `base_path`; with `ready`, only those
    whose SavedModel file exists (a half-written export is not ready, but its number is taken).

    Folders whose names parse to the same number (`7` and `007`): the name that sorts last is
    used, as TF Serving does, and the other one is logged and ignored."""
    import tensorflow as tf

    try:
        names = tf.io.gfile.listdir(base_path)
    except Exception:  # noqa: BLE001 - a missing or unreadable base path has no versions yet
        return {}
    out = {}
    for name in sorted(n.rstrip("/") for n in names):
        version = parse_version(name)
        if version is None:
            continue  # TF Serving ignores anything that is not a version number (temp dirs)
        folder = os.path.join(base_path, name)
        if ready and not any(tf.io.gfile.exists(os.path.join(folder, f)) for f in SAVED_MODEL_FILES):
            continue
        if version in out:
            log.warning("%s: folders %s and %s are both version %d; %s is used",
                        base_path, out[version], name, version, name)
        out[version] = name
    return out
