"""model.keras, the trainer's final model: a process killed (SIGKILL) at each point of the write,
or out of disk, leaves no model.keras, and a rerun writes the model an uninterrupted run writes
(tests/crashing_writes.py)."""

import errno
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.crashing_writes import KILL_POINTS, full_disk, visible_files

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _save(point, folder):
    return subprocess.run([sys.executable, "-m", "tests.crashing_writes", point, "model.keras", folder],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def _weights(folder):
    return [np.asarray(w) for w in keras.saving.load_model(os.path.join(folder, "model.keras")).get_weights()]


@pytest.mark.slow
def test_model_keras_killed_or_out_of_disk_is_absent_and_a_rerun_completes(tmp_path, monkeypatch):
    from vtcaps_tf.train import setup

    reference = str(tmp_path / "reference")
    assert _save("none", reference).returncode == 0
    expected = _weights(reference)
    model = keras.saving.load_model(os.path.join(reference, "model.keras"))

    def assert_complete(folder):
        for got, want in zip(_weights(folder), expected):
            np.testing.assert_array_equal(got, want)

    for point in KILL_POINTS:
        folder = str(tmp_path / point)
        run = _save(point, folder)
        assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
        if point == "after-rename":  # renamed: the whole model
            assert visible_files(folder) == ["model.keras"]
            assert_complete(folder)
        else:
            assert visible_files(folder) == [], point
        setup.save_model_atomically(model, folder)  # the rerun
        assert_complete(folder)

    full = str(tmp_path / "full")
    os.makedirs(full)
    with full_disk(monkeypatch), pytest.raises(OSError) as caught:
        setup.save_model_atomically(model, full)
    assert caught.value.errno == errno.ENOSPC and os.listdir(full) == []
    setup.save_model_atomically(model, full)
    assert_complete(full)
