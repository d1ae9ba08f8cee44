"""Test-only: the `vtcaps` command with a training process that dies as a crashed machine would
(SIGKILL, no cleanup) at a chosen epoch boundary. The product has no such switch; this wrapper adds
a callback to every training's callback list (`vtcaps_tf.train.setup.make_callbacks`) and then
runs the command as `vtcaps` does.

    python -m tests.crashing_vtcaps [--after-epoch N] [--before-epoch N] [--sigterm-at-step N]
                                    [--worker I] COMMAND ARGS...

--after-epoch N: right after epoch N's (1-based) end-of-epoch callbacks, its checkpoint included.
--before-epoch N: when epoch N begins, before its first step.
--sigterm-at-step N: not a crash: SIGTERM to the process itself when the optimizer finished its
    step N (a preemption notice arriving during step N + 1).
--worker I: only in worker I of TF_CONFIG's cluster (default: in every process).
The first training of the process crashes (a cross-validation's first fold).
"""

from __future__ import annotations

import json
import os
import signal
import sys

import keras

from vtcaps_tf.cli import main as vtcaps
from vtcaps_tf.train import setup


class Crash(keras.callbacks.Callback):
    def __init__(self, after_epoch=None, before_epoch=None, sigterm_at_step=None):
        super().__init__()
        self.after_epoch, self.before_epoch = after_epoch, before_epoch
        self.sigterm_at_step = sigterm_at_step

    def on_train_batch_end(self, batch, logs=None):
        if self.sigterm_at_step is not None and \
                int(self.model.optimizer.iterations.numpy()) == self.sigterm_at_step:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_epoch_begin(self, epoch, logs=None):
        if epoch + 1 == self.before_epoch:
            self._die()

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.after_epoch:
            self._die()

    @staticmethod
    def _die():
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def _parse(argv):
    settings = {"--after-epoch": None, "--before-epoch": None, "--sigterm-at-step": None,
                "--worker": None}
    while argv and argv[0] in settings:
        settings[argv[0]] = int(argv[1])
        argv = argv[2:]
    return settings, argv


def main(argv) -> int:
    settings, command = _parse(list(argv))
    worker = settings["--worker"]
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index", 0)
    if worker is None or worker == task:
        make_callbacks = setup.make_callbacks

        def with_crash(*args, **kwargs):
            callbacks = make_callbacks(*args, **kwargs)
            setup.make_callbacks = make_callbacks  # later trainings of the process run normally
            return callbacks + [Crash(settings["--after-epoch"], settings["--before-epoch"],
                                      settings["--sigterm-at-step"])]

        setup.make_callbacks = with_crash
    return vtcaps.main(command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
