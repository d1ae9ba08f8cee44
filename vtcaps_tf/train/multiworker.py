"""Multi-worker training: `vtcaps train --multi-worker` under tf.distribute.MultiWorkerMirroredStrategy.

Keras 3 `fit` does not run under MultiWorkerMirroredStrategy (keras-team/keras#20585), so this is a
custom loop around the model's own `train_step` / `test_step` (the same losses, loss trackers and
accuracies as `fit`) run with `strategy.run` on `experimental_distribute_dataset`. Everything
around the loop is the single-machine trainer's: the run directory checks, the model built and
compiled the same way, keras' BackupAndRestore checkpoint layout (`RUN_DIR/checkpoints/`), the
CSV history, keras' TensorBoard callback and vtcaps' validation / fusion summaries, `model.keras`.

Cluster: the standard `TF_CONFIG` (`{"cluster": {"worker": [...]}, "task": {"type": "worker",
"index": i}}`); worker 0 is the chief. Without TF_CONFIG the run is one worker.

Every worker runs the same code, reads every variable and writes every file, because saving and
reading metric state involve collectives all workers must join; only the chief writes into
RUN_DIR, the others into a scratch directory they delete at the end. On resume every worker
restores from RUN_DIR/checkpoints, which must therefore be on a filesystem they all read.

Data: the global batch (default 16, the paper's) is split over all replicas of all workers. The
training clips are sharded by file (worker i reads shards i, i + n, ... through
`distribute_datasets_from_function`) when every worker gets a shard; `--shard-policy data` (or fewer shards than workers) makes
every worker read every shard and keep its part of each global batch (AutoShardPolicy.DATA), so a
step sees exactly the clips a one-machine run sees. Validation always uses DATA.

Failures never hang: each collective has a timeout (`--collective-timeout`), and TensorFlow's
peer health check aborts the collectives of the survivors when a worker dies; the worker then
exits with a message naming the fix (restart every worker with --resume).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time

import tensorflow as tf

from vtcaps_tf.config import flags as cli_parsers
from vtcaps_tf.config.flags import DEFAULT_COLLECTIVE_TIMEOUT_S, SHARD_POLICIES  # noqa: F401
from vtcaps_tf.data import dataset as data_lib
from vtcaps_tf.data import features

# Fault injection for tests: "TASK:STEP" ends worker TASK with os._exit right before global
# training step STEP (1-based, counted over the run, resumes included), as a crash would.
KILL_AT_STEP_ENV = "VTCAPS_KILL_AT_STEP"
# Set by the local launcher: TensorFlow threads per worker process (cores shared by the workers).
THREADS_ENV = "VTCAPS_WORKER_THREADS"
EXIT_COLLECTIVE_FAILED = 3


class WorkerFailure(RuntimeError):
    """A collective failed or timed out: another worker stopped or cannot be reached."""


def add_arguments(parser) -> None:
    """The multi-worker flags of `vtcaps train` and `vtcaps crossval` (defined without TensorFlow)."""
    cli_parsers.add_multiworker_arguments(parser)


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
        raise ValueError(f"TF_CONFIG is not a cluster description: {err}") from None
    if set(cfg["cluster"]) - {"worker"} or task.get("type", "worker") != "worker":
        raise ValueError("TF_CONFIG: MultiWorkerMirroredStrategy takes a cluster of `worker` tasks "
                         "only (worker 0 is the chief)")
    index = int(task.get("index", 0))
    if not 0 <= index < len(workers):
        raise ValueError(f"TF_CONFIG: task index {index} outside the {len(workers)} workers")
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
        raise ValueError(f"shard policy must be one of {SHARD_POLICIES}, got {policy!r}")
    file_ok = num_files >= num_workers
    if policy == "file" and not file_ok:
        raise ValueError(f"--shard-policy file needs at least one training shard per worker: "
                         f"{num_files} shard(s), {num_workers} workers (use --shard-policy data)")
    if policy == "data" or (policy == "auto" and not file_ok):
        return tf.data.experimental.AutoShardPolicy.DATA
    return tf.data.experimental.AutoShardPolicy.FILE


def _with_policy(ds, policy):
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy
    return ds.with_options(options)


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

        def replica(batch):
            logs = step(batch)
            names = sorted(logs)
            if self.names is None:
                self.names = names
            return tf.stack([tf.cast(logs[k], tf.float32) for k in names])

        def run(iterator):
            packed = strategy.run(replica, args=(next(iterator),))
            # Running means over this replica's steps; equal batches make their mean the global one.
            return strategy.reduce(tf.distribute.ReduceOp.MEAN, packed, axis=None)

        return run

    def train_step(self, iterator) -> dict:
        return self._named(self._train(iterator))

    def test_step(self, iterator) -> dict:
        return self._named(self._test(iterator))

    def _named(self, packed):
        # The names are known once the step has been traced (the first call).
        return dict(zip(self.names, (float(v) for v in packed.numpy())))


def _collective_errors():
    return (tf.errors.DeadlineExceededError, tf.errors.UnavailableError, tf.errors.CancelledError,
            tf.errors.AbortedError, tf.errors.InternalError)


def _kill_step(task_index: int):
    spec = os.environ.get(KILL_AT_STEP_ENV, "")
    if ":" not in spec:
        return None
    task, step = spec.split(":", 1)
    return int(step) if int(task) == task_index else None


def train(config, shard: str = "auto", collective_timeout_s: float = DEFAULT_COLLECTIVE_TIMEOUT_S,
          train_files=None, eval_files=None, strategy=None):
    """Train as `training.train` does, on every worker of TF_CONFIG's cluster (see the module doc).

    train_files / eval_files: explicit shards (cross-validation folds); default the data
    directory's train/val splits. strategy: one made earlier by `start` (a process makes one
    only: several trainings in a process share it). Returns training.TrainResult on every worker.
    """
    task_index, num_workers = cluster_spec()
    if strategy is None:
        strategy = start(collective_timeout_s)
    try:
        return _train(config, strategy, task_index, num_workers, shard, train_files, eval_files)
    except _collective_errors() as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WorkerFailure(
            f"worker {task_index}: a cross-worker operation failed ({type(err).__name__}: {first}); "
            f"another worker stopped or cannot be reached. Restart every worker with --resume to "
            f"continue from the last checkpoint in {os.path.join(config.run_dir, 'checkpoints')}"
        ) from err


def _train(config, strategy, task_index, num_workers, shard, train_files, eval_files):
    import keras

    from vtcaps_tf.train import callbacks as cb
    from vtcaps_tf.train import fit as training

    if config.cpu_replicas > 1:
        raise training.SetupError("--cpu-replicas does not combine with multi-worker training "
                                  "(one replica per worker on CPU)")
    meta = features.read_metadata(config.data_dir)
    if train_files is None:
        train_files, n_train = training._split_info(config.data_dir, "train", meta)
        eval_files, n_eval = training._split_info(config.data_dir, "val", meta)
    else:
        train_files, eval_files = list(train_files), list(eval_files or [])
        n_train = data_lib.count_clips(train_files) if train_files else 0
        n_eval = data_lib.count_clips(eval_files) if eval_files else 0
    if not train_files or n_train == 0:
        raise features.SchemaError(f"{config.data_dir!r} holds no training clips")
    if not n_eval:
        eval_files = []
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise training.SetupError(f"the global batch size {config.batch_size} does not split evenly "
                                  f"over {replicas} replicas ({num_workers} workers)")
    policy = shard_policy(shard, len(train_files), num_workers)
    chief = task_index == 0

    # The chief writes into RUN_DIR; the other workers write the same files into scratch space.
    ckpt_dir = os.path.join(config.run_dir, "checkpoints")
    if chief:
        write_dir = config.run_dir
        os.makedirs(write_dir, exist_ok=True)
    else:
        write_dir = tempfile.mkdtemp(prefix=f"vtcaps-worker{task_index}-")
    log_dir = os.path.join(write_dir, "logs")
    training._check_run_dir(config, ckpt_dir)
    if chief:
        training.write_train_config(config, write_dir)
        print(f"TensorBoard: tensorboard --logdir {os.path.abspath(log_dir)}", flush=True)
        print(f"multi-worker: {num_workers} worker(s), {replicas} replica(s), global batch "
              f"{config.batch_size}, training shards split by "
              f"{'file' if policy == tf.data.experimental.AutoShardPolicy.FILE else 'data'}",
              flush=True)

    keras.utils.set_random_seed(config.seed)
    previous_policy = keras.config.dtype_policy()
    if config.mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        steps = config.steps_per_epoch or data_lib.steps_per_epoch(n_train, config.batch_size)
        with strategy.scope():
            model = training._build_and_compile(config, meta, steps)
            model(training._dummy_batch(model), training=False)
            model.optimizer.build(model.trainable_variables)
        mc = model.config
        training._warn_on_size_mismatch(meta, mc)

        def train_dataset(files, batch):
            return data_lib.make_dataset(
                files, model.contract, batch, training=True,
                augment=config.augment, num_records=n_train, cache=config.cache,
                shuffle_buffer=config.shuffle_buffer, seed=config.seed)

        if policy == tf.data.experimental.AutoShardPolicy.FILE:
            # By hand: tf.data's auto-sharder cannot see past the augmentation seeds' random
            # dataset zipped into the pipeline. Worker i reads shards i, i + n, ...
            def per_worker(ctx):
                ds = train_dataset(train_files[ctx.input_pipeline_id::ctx.num_input_pipelines],
                                   ctx.get_per_replica_batch_size(config.batch_size))
                return _with_policy(ds, tf.data.experimental.AutoShardPolicy.OFF)

            dist_train = strategy.distribute_datasets_from_function(per_worker)
        else:
            dist_train = strategy.experimental_distribute_dataset(
                _with_policy(train_dataset(train_files, config.batch_size), policy))
        train_iter = iter(dist_train)
        val_iter = val_ds = None
        val_steps = 0
        if eval_files:
            # Whole batches only: a replica without clips has no mean loss (as in training.py).
            val_batch = min(config.batch_size, n_eval // replicas * replicas)
            if val_batch:
                val_steps = config.validation_steps or n_eval // val_batch
                dist_val = data_lib.make_dataset(
                    eval_files, model.contract, val_batch,
                    training=False, num_records=n_eval, cache=config.cache,
                    drop_remainder=True).repeat()
                val_iter = iter(strategy.experimental_distribute_dataset(
                    _with_policy(dist_val, tf.data.experimental.AutoShardPolicy.DATA)))
            # Per-class summaries predict every clip, on every worker (no collectives involved).
            val_ds = data_lib.make_dataset(
                eval_files, model.contract, config.batch_size,
                training=False, num_records=n_eval, cache=config.cache)

        restore = keras.callbacks.BackupAndRestore(ckpt_dir, save_freq="epoch",
                                                   delete_checkpoint=False, double_checkpoint=True)
        save = restore if chief else keras.callbacks.BackupAndRestore(
            os.path.join(write_dir, "checkpoints"), save_freq="epoch", delete_checkpoint=False)
        callbacks = [cb.OptimizerStepLogger(), save,
                     cb.HistoryCSV(os.path.join(log_dir, "history.csv")),
                     cb.FusionWeightSummaries(os.path.join(log_dir, "train"))]
        if val_ds is not None:
            callbacks.append(cb.ValidationSummaries(val_ds, model.class_names,
                                                    os.path.join(log_dir, "validation"),
                                                    freq=config.summary_freq))
        callbacks.append(keras.callbacks.TensorBoard(log_dir, update_freq="epoch", write_graph=False))
        exit_after = os.environ.get(training.EXIT_AFTER_EPOCH_ENV)
        if exit_after:
            callbacks.append(cb.HardExitAfterEpoch(int(exit_after)))
        os.makedirs(log_dir, exist_ok=True)
        for callback in [restore, *callbacks]:
            callback.set_model(model)

        model._initial_epoch = None
        restore.on_train_begin()  # every worker loads the chief's checkpoint, when there is one
        initial_epoch = int(model._initial_epoch or 0)
        for callback in callbacks:
            if callback is not restore:
                callback.on_train_begin()
        loop = _Loop(strategy, model)
        kill_at = _kill_step(task_index)
        history = {}
        batch_writer = tf.summary.create_file_writer(os.path.join(log_dir, "train"))
        for epoch in range(initial_epoch, config.epochs):
            for callback in callbacks:
                callback.on_epoch_begin(epoch)
            model.reset_metrics()
            start = time.perf_counter()
            logs = {}
            for _ in range(steps):
                step = int(model.optimizer.iterations.numpy()) + 1
                if kill_at is not None and step == kill_at:
                    print(f"worker {task_index}: killed at step {step} ({KILL_AT_STEP_ENV})",
                          file=sys.stderr, flush=True)
                    os._exit(75)
                logs = loop.train_step(train_iter)
                with batch_writer.as_default(step=step):
                    # Running mean over the epoch so far, as keras' batch-level logs.
                    tf.summary.scalar("batch_loss", logs["loss"])
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
        for callback in callbacks:
            callback.on_train_end()
        batch_writer.close()

        training.save_model_atomically(model, write_dir)
    finally:
        keras.config.set_dtype_policy(previous_policy)
        if not chief:
            shutil.rmtree(write_dir, ignore_errors=True)
    return training.TrainResult(model=model, history=history,
                                model_path=os.path.join(config.run_dir, "model.keras"),
                                initial_epoch=initial_epoch, replicas=replicas)


# ---------------------------------------------------------------------------------------------
# command line (called from training.cli_main)


def cli_train(config, args) -> int:
    """One worker of a multi-worker run; exit code 0, 2 (setup) or 3 (a peer failed)."""
    from vtcaps_tf.train import fit as training

    try:
        result = train(config, shard=args.shard_policy, collective_timeout_s=args.collective_timeout)
    except (features.SchemaError, training.SetupError, ValueError) as err:
        print(f"vtcaps train: {err}", file=sys.stderr, flush=True)
        return 2
    except WorkerFailure as err:
        print(f"vtcaps train: {err}", file=sys.stderr, flush=True)
        # The strategy's server threads may still wait on the dead peer: do not join them.
        sys.stdout.flush()
        os._exit(EXIT_COLLECTIVE_FAILED)
    print(f"model: {result.model_path}", flush=True)
    return 0
