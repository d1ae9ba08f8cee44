"""Version folders under a model's base path, read as TF Serving reads them.

The one definition both sides use: export picks the next free version number from it
(`vtcaps_tf.export.saved_model`), serving decides which versions are ready to load (`vtcaps_tf.serving`).
Local paths are read with `os`; a URL (gs://...) with tf.io.gfile, TensorFlow imported on use.

A base path that does not exist holds no versions yet; one that cannot be read (no permission,
not a folder, an I/O error) is an OSError naming the path and the errno, never "no versions".
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


def _is_url(path: str) -> bool:
    return "://" in path


def _list_names(base_path: str) -> list[str]:
    """The names in `base_path`; [] when it does not exist. Raises OSError otherwise."""
    if _is_url(base_path):
        import tensorflow as tf

        try:
            return tf.io.gfile.listdir(base_path)
        except tf.errors.NotFoundError:
            return []
        except tf.errors.OpError as err:
            raise OSError(f"cannot list the model versions under {base_path!r}: {err.message}") from err
    try:
        return os.listdir(base_path)
    except FileNotFoundError:
        return []
    except OSError as err:  # permission, not a directory, I/O: the same errno, the path named
        raise type(err)(err.errno, f"cannot list the model versions: {err.strerror}", base_path) from err


def _exists(path: str) -> bool:
    if _is_url(path):
        import tensorflow as tf

        return tf.io.gfile.exists(path)
    return os.path.exists(path)


def version_dirs(base_path: str, ready: bool = True) -> dict[int, str]:
    """{version: folder name} of the version folders under `base_path`; with `ready`, only those
    whose SavedModel file exists (a half-written export is not ready, but its number is taken).

    Folders whose names parse to the same number (`7` and `007`): the name that sorts last is
    used, as TF Serving does, and the other one is logged and ignored. A missing base path has no
    versions; an unreadable one raises OSError (errno kept, the path named)."""
    names = _list_names(base_path)
    out = {}
    for name in sorted(n.rstrip("/") for n in names):
        version = parse_version(name)
        if version is None:
            continue  # TF Serving ignores anything that is not a version number (temp dirs)
        folder = os.path.join(base_path, name)
        if ready and not any(_exists(os.path.join(folder, f)) for f in SAVED_MODEL_FILES):
            continue
        if version in out:
            log.warning("%s: folders %s and %s are both version %d; %s is used",
                        base_path, out[version], name, version, name)
        out[version] = name
    return out
