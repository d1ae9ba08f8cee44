"""SIGTERM as a preemption notice (a Kubernetes eviction, a Slurm preemption, a spot VM's notice):
the training saves a checkpoint at the next step boundary and exits with EXIT_PREEMPTED.

`PreemptionWatch` only records that the signal came (a signal handler runs between two steps,
in the main thread); the trainers look at it after every step and save through their
`RunCheckpoint` (`save_step`: the finished epochs and the steps of the unfinished one). A
resumed run skips the batches the saved run consumed (`setup.train_dataset(skip_batches=...)`)
and continues with the next step.
"""

from __future__ import annotations

import signal
import threading

from vtcaps_tf.errors import PreemptedError


class PreemptionWatch:
    """Within `with PreemptionWatch() as watch:` a SIGTERM sets `watch.requested` instead of
    ending the process; the previous handler comes back on exit. Off the main thread (where
    Python cannot install handlers) it watches nothing."""

    def __init__(self):
        self._event = threading.Event()
        self._previous = None

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self) -> None:
        self._event.set()

    def _on_signal(self, signum, frame):
        self._event.set()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


def preempted(finished_epochs: int, step: int, steps: int, path: str) -> PreemptedError:
    """The error a trainer raises once its checkpoint after `finished_epochs` epochs and `step`
    steps of the next one is saved."""
    where = (f"after step {step} of {steps} of epoch {finished_epochs + 1}" if step
             else f"after epoch {finished_epochs}")
    return PreemptedError(f"SIGTERM: saved the checkpoint {path} {where}; rerun with --resume to "
                          "continue from it")
