"""Multi-worker training: `vtcaps train --multi-worker` under tf.distribute.MultiWorkerMirroredStrategy.

Keras 3 `fit` does not run under MultiWorkerMirroredStrategy (keras-team/keras#20585), so this is a
custom loop around the model's own `train_step` / `test_step` (the same losses, loss trackers and
accuracies as `fit`) run with `strategy.run` on distributed datasets. Everything around the loop is
`vtcaps_tf.train.setup`'s, as for the one-machine trainer: the run directory checks, the model
built and compiled the same way, the checkpoint (`RunCheckpoint`), the CSV history, keras'
TensorBoard callback and vtcaps' validation / fusion summaries, `model.keras`.

Cluster: the standard `TF_CONFIG` (`{"cluster": {"worker": [...]}, "task": {"type": "worker",
"index": i}}`); worker 0 is the chief. Without TF_CONFIG the run is one worker.

Every worker runs the same code, reads every variable and writes every file, because saving and
reading metric state involve collectives all workers must join; only the chief writes into
RUN_DIR, the others into a scratch directory they delete at the end. Every worker restores the
chief's checkpoint (RUN_DIR/checkpoints), which must therefore be on a filesystem they all read.

Data: the global batch (default 16, the paper's) is split over all replicas of all workers. The
training clips are sharded by file (worker i reads shards i, i + n, ... through
`distribute_datasets_from_function`) when every worker gets a shard; `--shard-policy data` (or
fewer shards than workers) makes every worker read every shard and keep its part of each global
batch (AutoShardPolicy.DATA), so a step sees exactly the clips a one-machine run sees. Validation
always uses DATA.

Failures never hang: each collective has a timeout (`--collective-timeout`), and TensorFlow's
peer health check aborts the collectives of the survivors when a worker dies; `train` then raises
`WorkerFailure`, whose message names the fix (restart every worker with --resume).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import typing

import tensorflow as tf

from vtcaps_tf.config.train_options import DEFAULT_COLLECTIVE_TIMEOUT_S, SHARD_POLICIES, TrainConfig
from vtcaps_tf.data import integrity
from vtcaps_tf.errors import EXIT_FAILURE, UsageError
from vtcaps_tf.train import preemption
from vtcaps_tf.train import setup
from vtcaps_tf.train.local_cluster import THREADS_ENV
from vtcaps_tf.train.setup import TrainResult


class WorkerFailure(RuntimeError):
    """A collective failed or timed out: another worker stopped or cannot be reached."""


# ---------------------------------------------------------------------------------------------
# cluster


def cluster_spec() -> tuple[int, int]:
    """(task index, number of workers) from TF_CONFIG; (0, 1) without it."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0, 1
    try:
        cfg = json.loads(raw)
        workers = cfg["cluster"]["worker"]
        task = cfg.get("task") or {}
    except (ValueError, KeyError, TypeError) as err:
        raise UsageError(f"TF_CONFIG is not a cluster description: {err}") from None
    if set(cfg["cluster"]) - {"worker"} or task.get("type", "worker") != "worker":
        raise UsageError("TF_CONFIG: MultiWorkerMirroredStrategy takes a cluster of `worker` tasks "
                         "only (worker 0 is the chief)")
    index = int(task.get("index", 0))
    if not 0 <= index < len(workers):
        raise UsageError(f"TF_CONFIG: task index {index} outside the {len(workers)} workers")
    return index, len(workers)


def configure_threads() -> None:
    """Apply the launcher's per-process thread count (before TensorFlow starts its pools)."""
    threads = os.environ.get(THREADS_ENV)
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(int(threads))


def make_strategy(collective_timeout_s: float = DEFAULT_COLLECTIVE_TIMEOUT_S):
    """MultiWorkerMirroredStrategy from TF_CONFIG, every collective bounded by the timeout.

    Must run before any other TensorFlow operation of the process (it starts the worker's server).
    """
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING,
        timeout_seconds=float(collective_timeout_s))
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def start(collective_timeout_s: float = DEFAULT_COLLECTIVE_TIMEOUT_S):
    """This process's worker: threads configured, the strategy made (first thing in the process)."""
    configure_threads()
    return make_strategy(collective_timeout_s)


def shard_policy(policy: str, num_files: int, num_workers: int):
    """The tf.data AutoShardPolicy for the training files (`auto`: FILE when each worker gets one)."""
    if policy not in SHARD_POLICIES:
        raise UsageError(f"shard policy must be one of {SHARD_POLICIES}, got {policy!r}")
    file_ok = num_files >= num_workers
    if policy == "file" and not file_ok:
        raise UsageError(f"--shard-policy file needs at least one training shard per worker: "
                         f"{num_files} shard(s), {num_workers} workers (use --shard-policy data)")
    if policy == "data" or (policy == "auto" and not file_ok):
        return tf.data.experimental.AutoShardPolicy.DATA
    return tf.data.experimental.AutoShardPolicy.FILE


def _with_policy(ds, policy):
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy
    return ds.with_options(options)


def abandon(message: str) -> typing.NoReturn:
    """End this worker with status 1 after a peer failed, without waiting for its threads: the
    strategy's server threads may still wait on the dead peer, and joining them would hang."""
    print(message, file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(EXIT_FAILURE)


# ---------------------------------------------------------------------------------------------
# the loop


class _Loop:
    """The compiled per-step functions; reductions are packed into one all-reduce per step."""

    def __init__(self, strategy, model):
        self.strategy = strategy
        self.model = model
        self.names = None
        self._train = tf.function(self._step_fn(model.train_step))
        self._test = tf.function(self._step_fn(model.test_step))

    def _step_fn(self, step):
        strategy = self.strategy

        def replica(batch, stop):
            logs = step(batch)
            names = sorted(logs)
            if self.names is None:
                self.names = names
            return tf.stack([tf.cast(logs[k], tf.float32) for k in names] + [stop])

        def run(iterator, stop):
            packed = strategy.run(replica, args=(next(iterator), stop))
            # Running means over this replica's steps; equal batches make their mean the global one.
            # The last entry rides along: above 0 when any worker was told to stop (SIGTERM).
            return strategy.reduce(tf.distribute.ReduceOp.MEAN, packed, axis=None)

        return run

    def train_step(self, iterator, stop: bool = False) -> tuple[dict, bool]:
        """(the step's logs, whether any worker asked to stop: every worker gets the same answer)."""
        return self._named(self._train(iterator, tf.constant(float(stop))))

    def test_step(self, iterator) -> dict:
        return self._named(self._test(iterator, tf.constant(0.0)))[0]

    def _named(self, packed):
        # The names are known once the step has been traced (the first call).
        values = [float(v) for v in packed.numpy()]
        return dict(zip(self.names, values[:-1])), values[-1] > 0


def _collective_errors():
    return (tf.errors.DeadlineExceededError, tf.errors.UnavailableError, tf.errors.CancelledError,
            tf.errors.AbortedError, tf.errors.InternalError)


def train(config: TrainConfig, strategy=None, train_files=None, eval_files=None) -> TrainResult:
    """Train as `vtcaps_tf.train.fit.train` does, on every worker of TF_CONFIG's cluster (see the
    module doc); returns a TrainResult on every worker.

    strategy: one made earlier by `start` (a process makes one only: several trainings in a
    process share it); default made here, with `config.collective_timeout`. train_files /
    eval_files: explicit shards (cross-validation folds); default the data directory's splits.
    Raises WorkerFailure when another worker stopped.
    """
    task_index, num_workers = cluster_spec()
    if strategy is None:
        strategy = start(config.collective_timeout)
    try:
        return _train(config, strategy, task_index, num_workers, train_files, eval_files)
    except _collective_errors() as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WorkerFailure(
            f"worker {task_index}: a cross-worker operation failed ({type(err).__name__}: {first}); "
            f"another worker stopped or cannot be reached. Restart every worker with --resume to "
            f"continue from the last checkpoint in {os.path.join(config.run_dir, setup.CHECKPOINT_DIR)}"
        ) from err


def _distributed_training_batches(config, strategy, data, model, policy, skip_steps=0):
    """The training batches over the workers, after the first `skip_steps` steps' (a resumed run)."""
    if policy == tf.data.experimental.AutoShardPolicy.FILE:
        # By hand: tf.data's auto-sharder cannot see past the augmentation seeds' random dataset
        # zipped into the pipeline. Worker i reads shards i, i + n, ...
        def per_worker(ctx):
            replicas_here = ctx.num_replicas_in_sync // ctx.num_input_pipelines
            ds = setup.train_dataset(config, data, model,
                                     files=data.train_files[ctx.input_pipeline_id::ctx.num_input_pipelines],
                                     batch_size=ctx.get_per_replica_batch_size(config.batch_size),
                                     skip_batches=skip_steps * replicas_here)
            return _with_policy(ds, tf.data.experimental.AutoShardPolicy.OFF)

        return strategy.distribute_datasets_from_function(per_worker)
    return strategy.experimental_distribute_dataset(
        _with_policy(setup.train_dataset(config, data, model, skip_batches=skip_steps), policy))


def _train(config, strategy, task_index, num_workers, train_files, eval_files):
    import keras

    data = setup.training_data(config, train_files, eval_files)
    replicas = strategy.num_replicas_in_sync
    setup.check_batch_split(config.batch_size, replicas, f" ({num_workers} workers)")
    policy = shard_policy(config.shard_policy, len(data.train_files), num_workers)
    chief = task_index == 0
    setup.prepare_run_dir(config, write=chief)
    # The chief writes into RUN_DIR; the other workers write the same files into scratch space.
    write_dir = config.run_dir if chief else tempfile.mkdtemp(prefix=f"vtcaps-worker{task_index}-")
    if chief:
        print(f"multi-worker: {num_workers} worker(s), {replicas} replica(s), global batch "
              f"{config.batch_size}, training shards split by "
              f"{'file' if policy == tf.data.experimental.AutoShardPolicy.FILE else 'data'}",
              flush=True)

    keras.utils.set_random_seed(config.seed)
    try:
        with setup.dtype_policy(config.mixed_precision):
            model, steps = setup.model_in_scope(config, data, strategy)

            checkpoint = setup.RunCheckpoint(
                model, os.path.join(write_dir, setup.CHECKPOINT_DIR),
                restore_from=os.path.join(config.run_dir, setup.CHECKPOINT_DIR))
            initial_epoch = checkpoint.restore()  # every worker loads the chief's checkpoint
            steps_done = checkpoint.steps_done if initial_epoch < config.epochs else 0

            train_iter = iter(_distributed_training_batches(config, strategy, data, model, policy,
                                                            initial_epoch * steps + steps_done))
            validation = setup.validation_data(config, data, model, replicas)
            val_iter = None
            if validation.batches is not None:
                val_iter = iter(strategy.experimental_distribute_dataset(
                    _with_policy(validation.batches.repeat(), tf.data.experimental.AutoShardPolicy.DATA)))

            log_dir = os.path.join(write_dir, setup.LOG_DIR)
            callbacks = setup.make_callbacks(config, model, checkpoint, log_dir, validation,
                                             write_graph=False, data=data)
            with (preemption.PreemptionWatch() as watch,
                  integrity.naming_corrupt_shard(data.train_files + data.eval_files)):
                history = _run_epochs(config, strategy, model, callbacks, train_iter, val_iter,
                                      validation.steps, initial_epoch, steps, log_dir, chief,
                                      watch=watch, checkpoint=checkpoint, steps_done=steps_done)
            setup.save_model_atomically(model, write_dir)
    finally:
        if not chief:
            shutil.rmtree(write_dir, ignore_errors=True)
    return TrainResult(model=model, history=history,
                       model_path=os.path.join(config.run_dir, "model.keras"),
                       initial_epoch=initial_epoch, replicas=replicas,
                       skipped_clips=data.skipped_clips, corrupt_shards=data.corrupt_shards)


def _run_epochs(config, strategy, model, callbacks, train_iter, val_iter, val_steps, initial_epoch,
                steps, log_dir, chief, watch=None, checkpoint=None, steps_done=0) -> dict:
    """Epochs initial_epoch..config.epochs - 1 (the first from its step `steps_done`), calling the
    callbacks as keras fit does at the train, epoch and step boundaries; the history of these
    epochs. When any worker's `watch` saw SIGTERM, every worker saves `checkpoint` at the end of
    the same step (at an epoch's last step: after the epoch's end) and raises PreemptedError."""
    for callback in callbacks:
        callback.set_model(model)
        callback.on_train_begin()
    loop = _Loop(strategy, model)
    history = {}
    batch_writer = tf.summary.create_file_writer(os.path.join(log_dir, "train"))
    for epoch in range(initial_epoch, config.epochs):
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        model.reset_metrics()
        start = time.perf_counter()
        logs, stop = {}, False
        for index in range(steps_done if epoch == initial_epoch else 0, steps):
            step = int(model.optimizer.iterations.numpy()) + 1
            logs, stop = loop.train_step(train_iter, watch is not None and watch.requested)
            with batch_writer.as_default(step=step):
                # Running mean over the epoch so far, as keras' batch-level logs.
                tf.summary.scalar("batch_loss", logs["loss"])
            for callback in callbacks:
                callback.on_train_batch_end(index, logs)
            if stop and index + 1 < steps:
                raise preemption.preempted(epoch, index + 1, steps, checkpoint.save_step(epoch, index + 1))
        seconds = time.perf_counter() - start
        if val_iter is not None and (epoch + 1) % config.validation_freq == 0:
            model.reset_metrics()
            val_logs = {}
            for _ in range(val_steps):
                val_logs = loop.test_step(val_iter)
            logs.update({f"val_{k}": v for k, v in val_logs.items()})
        batch_writer.flush()
        for callback in callbacks:
            callback.on_epoch_end(epoch, logs)
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
        if chief:
            print(f"Epoch {epoch + 1}/{config.epochs}: {steps} steps in {seconds:.1f}s "
                  f"({steps * config.batch_size / seconds:.2f} clips/s), "
                  + ", ".join(f"{k} {v:.4f}" for k, v in logs.items()), flush=True)
        if stop and epoch + 1 < config.epochs:
            raise preemption.preempted(epoch + 1, 0, steps, checkpoint.save_step(epoch + 1, 0))
    for callback in callbacks:
        callback.on_train_end()
    batch_writer.close()
    return history
