"""Files and folders that appear complete or not at all: the one way vtcaps writes an output a user
would trust (docs/design.md section 8, "Outputs").

Each writer writes a temporary name in the target's own folder (same file system, so the rename is
atomic), flushes and fsyncs it, renames it over the target and fsyncs the folder, so that a crash
or a full disk at any point leaves either the previous file, or no file, never a partial one.
Temporary names start with "." and hold ".tmp-" (`is_temporary`): readers and globs skip them.

A URL (gs://, s3://...) is written through tf.io.gfile in one call: object stores publish an
object only once its upload completes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid

_TMP_MARK = ".tmp-"


def _is_url(path: str) -> bool:
    return "://" in str(path)


def temporary_name(path: str) -> str:
    """A fresh temporary path beside `path` that keeps its extensions (Keras wants `.keras`)."""
    folder, name = os.path.split(os.fspath(path))
    stem, dot, ext = name.partition(".")
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return os.path.join(folder, f".{stem}{_TMP_MARK}{token}{dot}{ext}")


def is_temporary(name: str) -> bool:
    """Whether a file name is one of `temporary_name`'s."""
    base = os.path.basename(os.fspath(name).rstrip("/"))
    return base.startswith(".") and _TMP_MARK in base


def fsync_path(path: str) -> None:
    """fsync a file, or a folder and everything in it (the folder entries included)."""
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path, topdown=False):
            for name in files:
                _fsync_one(os.path.join(root, name), os.O_RDONLY)
            _fsync_one(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    else:
        _fsync_one(path, os.O_RDONLY)


def fsync_dir(folder: str) -> None:
    """fsync a folder's entries, so that a rename inside it survives a power loss."""
    _fsync_one(folder or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def _fsync_one(path: str, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError as err:
        # Some file systems cannot fsync a folder (EINVAL); the data itself is synced.
        if not (flags & getattr(os, "O_DIRECTORY", 0)) or err.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


@contextlib.contextmanager
def atomic_path(path: str, replace: bool = True):
    """Yield a temporary path for a writer that takes a path (a file or a whole folder); when the
    block ends without an error, sync it and rename it to `path`. On an error it is removed.

    replace=False: a folder `path` must not exist (a rename onto a non-empty folder fails), and
    a file `path` that exists is an error too (FileExistsError)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        fsync_path(tmp)
        _publish(tmp, path, replace)
        fsync_dir(folder)
    except BaseException:
        _remove(tmp)
        raise


def _publish(tmp: str, path: str, replace: bool) -> None:
    """Rename the synced `tmp` to `path`: the one step after which readers see the output."""
    if replace:
        os.replace(tmp, path)
    elif os.path.isdir(tmp):
        os.rename(tmp, path)  # fails when `path` appeared meanwhile with content
    else:
        os.link(tmp, path)  # fails when `path` exists, unlike a rename
        os.remove(tmp)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", encoding: str | None = "utf-8", newline=None):
    """Open a file to write that appears at `path` only when the block ends without an error."""
    binary = "b" in mode
    if _is_url(path):
        import tensorflow as tf  # URLs only: the base layer imports no TensorFlow

        with tf.io.gfile.GFile(path, "wb" if binary else "w") as f:
            yield f
        return
    with atomic_path(path) as tmp:
        with open(tmp, mode, **({} if binary else {"encoding": encoding, "newline": newline})) as f:
            yield f
            f.flush()


def write_text(path: str, text: str) -> str:
    with atomic_write(path) as f:
        f.write(text)
    return path


def write_bytes(path: str, data: bytes) -> str:
    with atomic_write(path, "wb") as f:
        f.write(data)
    return path


def write_json(path: str, obj, **dump_options) -> str:
    """`obj` as JSON (`dump_options` go to json.dump, default indent=2), ending in a newline."""
    dump_options.setdefault("indent", 2)
    with atomic_write(path) as f:
        json.dump(obj, f, **dump_options)
        f.write("\n")
    return path
