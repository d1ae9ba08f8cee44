"""Test-only: run a writer in a child process that dies as a crashed machine would (SIGKILL, no
cleanup) at a chosen point of `vtcaps_tf.utils.atomic_files`, or that meets a full disk. The
product has no such switch; the child replaces the helper's own steps before it calls the writer.

Kill points (`KILL_POINTS`), in the order a write goes through them:
  mid-write      a write call has put half of its bytes into the temporary file. For writers that
                 take a path (Keras, matplotlib, TensorFlow) the temporary file is cut to half of
                 what they wrote, the state a kill inside their write leaves on disk.
  before-sync    everything written, nothing synced
  before-rename  synced under the temporary name
  after-rename   moved into place by the rename, the folder not yet synced

`full_disk` makes every write of the helper's files fail with ENOSPC after half of its bytes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys

from vtcaps_tf.utils import atomic_files

KILL_POINTS = ("mid-write", "before-sync", "before-rename", "after-rename")


def _die():
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class _HalfWrite:
    """A file object whose first write puts half of its bytes in the file, then calls `fail`."""

    def __init__(self, f, fail):
        self._f, self._fail = f, fail

    def write(self, data):
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        self._fail()

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def _enospc():
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _half_writing_open(fail):
    def fake_open(path, *args, **kwargs):
        return _HalfWrite(open(path, *args, **kwargs), fail)
    return fake_open


def _cut_then(fail):
    def cut(path):
        if os.path.isfile(path):
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
        else:
            for root, _, files in os.walk(path):
                for name in files:
                    full = os.path.join(root, name)
                    with open(full, "r+b") as f:
                        f.truncate(os.path.getsize(full) // 2)
        fail()
    return cut


def install_kill_point(point: str) -> None:
    """Make this process SIGKILL itself at `point` of its next atomic write."""
    if point == "mid-write":
        atomic_files.open = _half_writing_open(_die)  # module global, found ahead of the builtin
        atomic_files.fsync_path = _cut_then(_die)
    elif point == "before-sync":
        atomic_files.fsync_path = lambda path: _die()
    elif point == "before-rename":
        atomic_files._publish = lambda tmp, path, replace: _die()
    elif point == "after-rename":
        atomic_files.fsync_dir = lambda folder: _die()
    else:
        raise ValueError(f"unknown kill point {point!r}")


@contextlib.contextmanager
def full_disk(monkeypatch):
    """Within the block, the helper's file writes fail with ENOSPC after half their bytes, and a
    writer that takes a path finds ENOSPC when its output is synced (half of it on disk)."""
    with monkeypatch.context() as m:
        m.setattr(atomic_files, "open", _half_writing_open(_enospc), raising=False)
        m.setattr(atomic_files, "fsync_path", _cut_then(_enospc))
        yield


def killed_at(point: str, write) -> int:
    """Run `write()` in a forked child killed at `point`; the signal that ended the child.

    Only for writers that run no TensorFlow op: TensorFlow's threads do not survive a fork."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into the test
        try:
            install_kill_point(point)
            write()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0


def visible_files(folder) -> list[str]:
    """Every file under `folder` a reader would see (temporary names left out), relative."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not atomic_files.is_temporary(d)]
        found += [os.path.relpath(os.path.join(root, f), folder) for f in files
                  if not atomic_files.is_temporary(f)]
    return sorted(found)


def _save_model(folder):
    """A small Keras model of fixed weights, saved as `folder/model.keras` by the trainer's writer."""
    import keras

    from vtcaps_tf.train import setup

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    setup.save_model_atomically(model, folder)


def _export(base):
    """An untrained `tiny` model exported as the next version under `base`."""
    from vtcaps_tf.export.saved_model import export_model
    from vtcaps_tf.models import build_model

    export_model(build_model("tiny", class_names=["anger", "happy", "sad"], num_classes=3), base)


WRITERS = {"model.keras": _save_model, "export": _export}


def main(argv) -> int:
    """python -m tests.crashing_writes POINT WRITER PATH: one of `WRITERS` killed at POINT
    (POINT "none": not killed)."""
    point, writer, path = argv
    if point != "none":
        install_kill_point(point)
    WRITERS[writer](path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
