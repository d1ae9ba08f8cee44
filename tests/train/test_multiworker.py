"""Multi-worker training: TF_CONFIG handling, the local launcher's watchdog, and (slow) two workers
on loopback against one machine's `fit`, killed mid-epoch and resumed."""

import csv
import io
import json
import os
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.data.fixtures import write_dataset
from tests.train.test_training import _read_events, finished_epochs
from vtcaps_tf.cli import main as vtcaps
from vtcaps_tf.config.augment import AugmentConfig
from vtcaps_tf.config.options import OptionError
from vtcaps_tf.config.train_options import TrainConfig
from vtcaps_tf.errors import UsageError
from vtcaps_tf.train import fit as training
from vtcaps_tf.train import local_cluster, multiworker

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---------------------------------------------------------------------------------------------
# fast


def test_cluster_spec_from_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert multiworker.cluster_spec() == (0, 1)
    monkeypatch.setenv("TF_CONFIG", local_cluster.tf_config(["h0:1", "h1:2", "h2:3"], 2))
    assert multiworker.cluster_spec() == (2, 3)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"], "ps": ["b:2"]},
                                                "task": {"type": "worker", "index": 0}}))
    with pytest.raises(UsageError, match="worker"):
        multiworker.cluster_spec()
    monkeypatch.setenv("TF_CONFIG", local_cluster.tf_config(["a:1"], 1))
    with pytest.raises(UsageError, match="index 1"):
        multiworker.cluster_spec()


def test_generated_tf_config_is_the_standard_layout():
    cfg = json.loads(local_cluster.tf_config(["127.0.0.1:1000", "127.0.0.1:1001"], 1))
    assert cfg == {"cluster": {"worker": ["127.0.0.1:1000", "127.0.0.1:1001"]},
                   "task": {"type": "worker", "index": 1}}
    ports = local_cluster.free_ports(3)
    assert len(set(ports)) == 3


def test_shard_policy_is_by_file_when_every_worker_gets_a_shard():
    policy = tf.data.experimental.AutoShardPolicy
    assert multiworker.shard_policy("auto", 4, 2) == policy.FILE
    assert multiworker.shard_policy("auto", 1, 2) == policy.DATA
    assert multiworker.shard_policy("data", 4, 2) == policy.DATA
    with pytest.raises(UsageError, match="one training shard per worker"):
        multiworker.shard_policy("file", 1, 2)


def test_launcher_strips_its_own_flag():
    argv = ["train", "--data", "d", "--local-workers", "2", "--epochs", "3", "--local-workers=4"]
    assert local_cluster.strip_launcher_args(argv) == ["train", "--data", "d", "--epochs", "3"]


def test_watchdog_stops_the_others_when_one_worker_dies(tmp_path):
    # Worker 1 fails after 1 s; worker 0 would run for 120 s. The launcher must stop it at once.
    script = tmp_path / "worker.py"
    script.write_text(
        "import json, os, sys, time\n"
        "i = json.loads(os.environ['TF_CONFIG'])['task']['index']\n"
        "assert sys.argv[-1] == '--multi-worker'\n"
        "print('hello from', i, 'threads', os.environ['VTCAPS_WORKER_THREADS'], flush=True)\n"
        "time.sleep(1 if i else 120)\n"
        "sys.exit(7 if i else 0)\n")
    out, err = io.StringIO(), io.StringIO()
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    start = time.monotonic()
    code = local_cluster.launch("worker", ["--x", "1"], 2, env=env, out=out, err=err)
    assert code == 1
    assert time.monotonic() - start < 60
    assert "[worker 0] hello from 0" in out.getvalue() and "[worker 1] hello from 1" in out.getvalue()
    assert "worker 1 exited with code 7; stopping workers 0" in err.getvalue()
    assert "--resume" in err.getvalue()


def test_watchdog_returns_zero_when_every_worker_succeeds(tmp_path):
    (tmp_path / "ok.py").write_text("import sys; sys.exit(0)\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    assert local_cluster.launch("ok", [], 3, env=env, out=io.StringIO(), err=io.StringIO()) == 0


def test_a_worker_that_refuses_its_input_makes_the_launcher_exit_2(tmp_path):
    (tmp_path / "refuses.py").write_text("import sys; sys.exit(2)\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    err = io.StringIO()
    assert local_cluster.launch("refuses", [], 2, env=env, out=io.StringIO(), err=err) == 2
    assert "refused" in err.getvalue()
    assert local_cluster.launch("refuses", [], 0, env=env, out=io.StringIO(), err=err) == 2


def test_cli_refuses_cpu_replicas_with_multi_worker_before_starting_workers(tmp_path, capsys):
    with pytest.raises(OptionError, match="cpu-replicas"):
        TrainConfig(data_dir="d", run_dir="r", cpu_replicas=2, multi_worker=True)
    start = time.monotonic()
    assert vtcaps.main(["train", "--data", str(tmp_path), "--run-dir", str(tmp_path / "run"),
                        "--local-workers", "2", "--cpu-replicas", "2"]) == 2
    assert "--cpu-replicas does not combine" in capsys.readouterr().err
    assert time.monotonic() - start < 5  # refused here, no worker started


# ---------------------------------------------------------------------------------------------
# slow: two workers on loopback

TRAIN_ARGS = ["--preset", "tiny", "--epochs", "2", "--batch-size", "16", "--steps-per-epoch", "2",
              "--no-augment", "--seed", "3", "--shard-policy", "data", "--shuffle-buffer", "1"]
# --shard-policy data: each worker keeps its half of every global batch, as MirroredStrategy splits
# it over two local replicas; --shuffle-buffer 1: the batches are the same clips whichever run (and
# however many iterators over the dataset) reads them.


def _launch(data, run_dir, *extra, crash=()):
    """`vtcaps train --local-workers 2 ...`'s launcher; `crash`: the test wrapper's options to kill
    a worker (tests/crashing_vtcaps.py)."""
    out, err = io.StringIO(), io.StringIO()
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    argv = ["train", "--data", data, "--run-dir", run_dir, *TRAIN_ARGS, *extra]
    module = "tests.crashing_vtcaps" if crash else "vtcaps_tf.cli.main"
    code = local_cluster.launch(module, [*crash, *argv], 2, env=env, out=out, err=err, timeout_s=900)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.slow
def test_two_workers_match_fit_survive_a_killed_worker_and_resume(tmp_path):
    data = write_dataset(str(tmp_path / "data"), counts={"train": 32, "val": 8}, shards=2)
    run_dir = str(tmp_path / "run")

    # 1. Worker 1 dies (SIGKILL) before global step 3, the first of epoch 2: the run stops, with
    #    a message; the chief's checkpoint holds epoch 1.
    start = time.monotonic()
    code, out, err = _launch(data, run_dir, crash=("--before-epoch", "2", "--worker", "1"))
    assert code == 1, err[-3000:]
    assert "worker 1 was killed by SIGKILL" in err and "--resume" in err
    assert time.monotonic() - start < 600
    assert finished_epochs(run_dir) == 1
    assert not os.path.exists(os.path.join(run_dir, "model.keras"))

    # 2. Both workers restarted with --resume: epoch 2 only, the optimizer step continues.
    code, out, err = _launch(data, run_dir, "--resume")
    assert code == 0, err[-3000:]
    assert "Epoch 2/2" in out and "Epoch 1/2" not in out
    with open(os.path.join(run_dir, "logs", "history.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert [int(float(r["optimizer_step"])) for r in rows] == [2, 4]
    losses = [float(r["loss"]) for r in rows]
    # The resumed epoch continues the data and the dropout draws where the first run left them
    # (test_preemption.py shows it ends on the uninterrupted run's weights), so over 2 steps its
    # mean loss moves by about the draws' noise: it stays close, it does not diverge.
    assert np.all(np.isfinite(losses)) and abs(losses[1] - losses[0]) < 0.05 * losses[0]
    for key in ("val_loss", "margin_loss", "tpn_loss", "accuracy", "val_accuracy"):
        assert key in rows[0], key

    # 3. The chief wrote the TensorBoard events (the other worker wrote into scratch space).
    train_tags = _read_events(os.path.join(run_dir, "logs", "train"))
    val_tags = _read_events(os.path.join(run_dir, "logs", "validation"))
    assert [s for s, _, _ in train_tags["epoch_loss"]] == [0, 1]
    assert "epoch_loss" in val_tags and "macro_f1" in val_tags
    assert val_tags["confusion_matrix"][0][1] == "images"
    assert sorted(s for s, _, _ in train_tags["batch_loss"]) == [1, 2, 3, 4]
    assert not [p for p in os.listdir(run_dir) if p.startswith("worker")]

    # 4. The saved model is the single-machine trainer's format, optimizer state included.
    from vtcaps_tf.models import load_trained_model
    import keras

    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"))
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 4
    assert load_trained_model(os.path.join(run_dir, "model.keras")).class_names == [
        "class_0", "class_1", "class_2"]

    # 5. Step 1 sees the same global batch as keras fit on one machine with two replicas (same
    #    seed, same split of the batch over replicas): the same loss.
    first_step = dict((s, v) for s, _, v in train_tags["batch_loss"])[1]
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.fail("tests/conftest.py should have made 2 logical CPU devices")
    ref = training.train(TrainConfig(
        data_dir=data, run_dir=str(tmp_path / "fit"), preset="tiny", epochs=1, batch_size=16,
        steps_per_epoch=1, cpu_replicas=2, seed=3, augment=AugmentConfig.none(),
        shuffle_buffer=1, verbose=0))
    # Same maths; oneDNN's float32 sums run in an order that depends on the process' threads
    # (about 3e-5 apart, relative).
    assert first_step == pytest.approx(ref.history["loss"][0], rel=1e-4)
