"""SIGTERM during epoch 2 (tests/crashing_vtcaps.py sends it after a chosen optimizer step): the
training saves at that step's end, exits with EXIT_PREEMPTED, and `--resume` ends with the step
count and, with --shuffle-buffer 1 and no augmentation, the weights of a run never stopped; on one
machine and on two local workers."""

import io
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.data.fixtures import write_dataset
from vtcaps_tf.errors import EXIT_OK, EXIT_PREEMPTED

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EPOCHS, STEPS = 2, 3
ARGS = ["--preset", "tiny", "--epochs", str(EPOCHS), "--batch-size", "2", "--steps-per-epoch",
        str(STEPS), "--cpu-replicas", "1", "--no-augment", "--shuffle-buffer", "1", "--verbose", "2"]
SIGTERM_AT = STEPS + 1  # after the first step of epoch 2


def _run(module_args, env=None):
    env = dict(os.environ if env is None else env, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", *module_args], cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=900)


def saved_position(run_dir):
    """(finished epochs, steps of the next one, optimizer step) of the latest checkpoint, read
    with TensorFlow's own reader."""
    latest = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    values = {name: int(tf.train.load_variable(latest, f"{name}/.ATTRIBUTES/VARIABLE_VALUE"))
              for name in ("epoch", "step", "optimizer/_iterations")}
    return values["epoch"], values["step"], values["optimizer/_iterations"]


def final_model(run_dir):
    import vtcaps_tf.models  # noqa: F401  (registers the custom objects)

    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"))
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations)), model.get_weights()


@pytest.mark.slow
def test_sigterm_saves_within_a_step_and_resume_matches_an_unstopped_run(tmp_path):
    data = write_dataset(str(tmp_path / "data"), counts={"train": 12})
    whole, stopped = str(tmp_path / "whole"), str(tmp_path / "stopped")

    run = _run(["vtcaps_tf.cli.main", "train", "--data", data, "--run-dir", whole, *ARGS])
    assert run.returncode == EXIT_OK, run.stderr[-3000:]

    run = _run(["tests.crashing_vtcaps", "--sigterm-at-step", str(SIGTERM_AT), "train", "--data", data,
                "--run-dir", stopped, *ARGS])
    assert run.returncode == EXIT_PREEMPTED, run.stderr[-3000:]
    assert "vtcaps train: preempted: SIGTERM: saved the checkpoint" in run.stderr
    # saved at the end of the step during which the signal came: epoch 1 done, 1 step of epoch 2
    assert saved_position(stopped) == (1, SIGTERM_AT - STEPS, SIGTERM_AT)
    assert not os.path.exists(os.path.join(stopped, "model.keras"))

    run = _run(["vtcaps_tf.cli.main", "train", "--data", data, "--run-dir", stopped, *ARGS, "--resume"])
    assert run.returncode == EXIT_OK, run.stderr[-3000:]
    steps, weights = final_model(stopped)
    steps_whole, weights_whole = final_model(whole)
    assert steps == steps_whole == EPOCHS * STEPS
    for got, want in zip(weights, weights_whole):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _launch_two(data, run_dir, *extra, wrapper=()):
    """`vtcaps train --local-workers 2 ...`'s launcher; `wrapper`: tests/crashing_vtcaps.py's options."""
    from vtcaps_tf.train import local_cluster

    out, err = io.StringIO(), io.StringIO()
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    argv = ["train", "--data", data, "--run-dir", run_dir, *MULTI_WORKER_ARGS, *extra]
    module = "tests.crashing_vtcaps" if wrapper else "vtcaps_tf.cli.main"
    code = local_cluster.launch(module, [*wrapper, *argv], 2, env=env, out=out, err=err, timeout_s=900)
    return code, err.getvalue()


# Each worker one replica; --shard-policy data: each keeps its half of every global batch.
MULTI_WORKER_ARGS = [*ARGS[:ARGS.index("--cpu-replicas")], *ARGS[ARGS.index("--cpu-replicas") + 2:],
                     "--shard-policy", "data"]


@pytest.mark.slow
def test_sigterm_to_one_of_two_workers_stops_both_at_one_step_and_resume_matches(tmp_path):
    data = write_dataset(str(tmp_path / "data"), counts={"train": 12}, shards=2)
    whole, stopped = str(tmp_path / "whole"), str(tmp_path / "stopped")

    code, err = _launch_two(data, whole)
    assert code == EXIT_OK, err[-3000:]

    # SIGTERM reaches worker 1 alone, during step SIGTERM_AT + 1: the workers learn it together
    # from that step's all-reduce and both save at its end.
    code, err = _launch_two(data, stopped, wrapper=("--sigterm-at-step", str(SIGTERM_AT), "--worker", "1"))
    assert code == EXIT_PREEMPTED, err[-3000:]
    assert err.count("vtcaps train: preempted: SIGTERM") == 2
    assert saved_position(stopped) == (1, SIGTERM_AT + 1 - STEPS, SIGTERM_AT + 1)
    assert not os.path.exists(os.path.join(stopped, "model.keras"))

    code, err = _launch_two(data, stopped, "--resume")
    assert code == EXIT_OK, err[-3000:]
    steps, weights = final_model(stopped)
    steps_whole, weights_whole = final_model(whole)
    assert steps == steps_whole == EPOCHS * STEPS
    for got, want in zip(weights, weights_whole):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
