"""What every training of VT-3DCapsNet sets up, whichever loop runs it (docs/design.md section 8):
keras `fit` on one machine (`vtcaps_tf.train.fit`) and the custom loop over several workers
(`vtcaps_tf.train.multiworker`) use these and nothing else of each other.

Run directory:
  RUN_DIR/train_config.json   the configuration (checked again on --resume)
  RUN_DIR/checkpoints/        model weights, optimizer state and the number of finished epochs
                              (`RunCheckpoint`: tf.train.CheckpointManager, two kept)
  RUN_DIR/logs/train, logs/validation   TensorBoard event files
  RUN_DIR/logs/history.csv    one row per finished epoch (appended across resumes)
  RUN_DIR/model.keras         the final model
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys

import keras
import tensorflow as tf

from vtcaps_tf.config.train_options import TrainConfig, model_settings
from vtcaps_tf.data import dataset as data_lib
from vtcaps_tf.data import features
from vtcaps_tf.data import integrity
from vtcaps_tf.errors import UsageError
from vtcaps_tf.train import callbacks as cb
from vtcaps_tf.utils import atomic_files

CONFIG_FILE = "train_config.json"
CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"


class SetupError(UsageError):
    """The run cannot start as configured (run directory state, devices, batch split)."""


@dataclasses.dataclass
class TrainResult:
    model: object
    history: dict  # metric -> one value per epoch this run trained
    model_path: str
    initial_epoch: int  # epochs finished before this run (restored from the checkpoint)
    replicas: int
    skipped_clips: int | None = 0  # --skip-corrupt-records: clips left out (None: not known)
    corrupt_shards: list = dataclasses.field(default_factory=list)  # where each shard stops


# ---------------------------------------------------------------------------------------------
# data


@dataclasses.dataclass
class TrainingData:
    """The shards a run trains and validates on, with their clip counts."""

    meta: dict  # the data directory's metadata.json
    train_files: list
    num_train: int
    eval_files: list  # empty: no validation
    num_eval: int
    # --skip-corrupt-records: readable records of each shard (None: all), and what is left out
    train_records: list | None = None
    eval_records: list | None = None
    skipped_clips: int | None = 0  # None: some were skipped, how many is not known
    corrupt_shards: list = dataclasses.field(default_factory=list)


def training_data(config: TrainConfig, train_files=None, eval_files=None) -> TrainingData:
    """The train/val splits of `config.data_dir`, or the given shards of it (cross-validation
    folds; `eval_files` may be empty). A shard that cannot be read to its end is a
    CorruptDataError naming it, or with `config.skip_corrupt_records` is read up to where it
    stops (`integrity.readable_parts`)."""
    meta = features.read_metadata(config.data_dir)
    if config.skip_corrupt_records:
        return _readable_training_data(config, meta, train_files, eval_files)
    with integrity.naming_corrupt_shard(list(train_files or []) + list(eval_files or [])):
        return _training_data(config, meta, train_files, eval_files)


def _training_data(config, meta, train_files, eval_files):
    if train_files is None:
        if meta.get("folds"):
            raise features.SchemaError(f"{config.data_dir!r} is split into {meta['folds']} cross-"
                                       "validation folds: train on it with `vtcaps crossval`")
        train_files, num_train = _split(config.data_dir, "train", meta)
        if not train_files or num_train == 0:
            raise features.SchemaError(f"{config.data_dir!r} holds no training clips "
                                       f"(train-*{features.SHARD_SUFFIX} missing or empty)")
        eval_files, num_eval = _split(config.data_dir, "val", meta)
    else:
        train_files, eval_files = list(train_files), list(eval_files or [])
        num_train = data_lib.count_clips(train_files) if train_files else 0
        if num_train == 0:
            raise features.SchemaError(f"no training clips in {train_files}")
        num_eval = data_lib.count_clips(eval_files) if eval_files else 0
    return TrainingData(meta, list(train_files), num_train, list(eval_files) if num_eval else [], num_eval)


def _split_files(config, meta, train_files, eval_files):
    if train_files is None:
        return features.split_files(config.data_dir, "train"), features.split_files(config.data_dir, "val")
    return list(train_files), list(eval_files or [])


def _expected_clips(meta, files) -> int | None:
    """The clips metadata.json promises in `files` (whole splits of it), None when it does not say."""
    counts = meta.get("counts") or {}
    splits = {os.path.basename(f).split("-")[0] for f in files}
    if not all(s in counts for s in splits):
        return None
    return sum(int(counts[s]) for s in splits)


def _readable_training_data(config, meta, train_files, eval_files) -> TrainingData:
    if train_files is None and meta.get("folds"):
        return _training_data(config, meta, train_files, eval_files)  # its error names crossval
    train_files, eval_files = _split_files(config, meta, train_files, eval_files)
    if not train_files:
        raise features.SchemaError(f"{config.data_dir!r} holds no training clips "
                                   f"(train-*{features.SHARD_SUFFIX} missing)")
    train = integrity.readable_parts(train_files)
    val = integrity.readable_parts(eval_files) if eval_files else None
    corrupt = train.corrupt + (val.corrupt if val else [])
    skipped = 0
    for parts, files in ((train, train_files), (val, eval_files)):
        if parts is not None and parts.corrupt:
            lost = parts.skipped_clips(_expected_clips(meta, files))
            skipped = None if lost is None or skipped is None else skipped + lost
            print(f"vtcaps train: skipping corrupt records: "
                  f"{parts.summary(_expected_clips(meta, files))}", file=sys.stderr)
    if train.clips == 0:
        raise features.SchemaError(f"no readable training clips in {train_files}")
    num_eval = val.clips if val else 0
    return TrainingData(meta, train_files, train.clips, eval_files if num_eval else [], num_eval,
                        train_records=train.records, eval_records=val.records if val else None,
                        skipped_clips=skipped, corrupt_shards=[c.describe() for c in corrupt])


def _split(data_dir, split, meta):
    files = features.split_files(data_dir, split)
    count = (meta.get("counts") or {}).get(split)
    if files and count is None:
        count = data_lib.count_clips(files)
    return files, int(count or 0)


def steps_per_epoch(config: TrainConfig, data: TrainingData) -> int:
    return config.steps_per_epoch or data_lib.steps_per_epoch(data.num_train, config.batch_size)


def check_batch_split(batch_size: int, replicas: int, where: str = "") -> None:
    if batch_size % replicas:
        raise SetupError(f"the global batch size {batch_size} does not split evenly over "
                         f"{replicas} replicas{where}")


def train_dataset(config: TrainConfig, data: TrainingData, model, files=None, batch_size=None,
                  skip_batches: int = 0):
    """The repeating, shuffled, augmented training batches (`files`/`batch_size`: a worker's own
    shards and per-replica batch; default all of them and the global batch), after the first
    `skip_batches` of them: a resumed run continues where the saved one stopped reading."""
    files = data.train_files if files is None else files
    records = None
    if data.train_records is not None:
        readable = dict(zip(data.train_files, data.train_records))
        records = [readable[f] for f in files]
    return data_lib.make_dataset(
        files, model.contract,
        config.batch_size if batch_size is None else batch_size, training=True,
        augment=config.augment, num_records=data.num_train, cache=config.cache,
        shuffle_buffer=config.shuffle_buffer, seed=config.seed, records=records,
        skip_batches=skip_batches)


@dataclasses.dataclass
class ValidationData:
    summaries: object  # every clip once, for the per-class summaries; None without validation
    batches: object  # whole batches for the validation losses; None when too few clips
    steps: int  # batches of `batches` in one validation pass


def validation_data(config: TrainConfig, data: TrainingData, model, replicas: int) -> ValidationData:
    """The validation sets. With several replicas the loss batches are whole and split evenly: a
    replica without clips has no mean loss. The summaries still see every clip."""
    if not data.eval_files:
        return ValidationData(None, None, 0)

    def make(batch, drop_remainder=False):
        return data_lib.make_dataset(data.eval_files, model.contract, batch, training=False,
                                     num_records=data.num_eval, cache=config.cache,
                                     drop_remainder=drop_remainder, records=data.eval_records)

    summaries = make(config.batch_size)
    if replicas == 1:
        batch, batches = config.batch_size, summaries
        steps = data_lib.steps_per_epoch(data.num_eval, batch)
    else:
        batch = min(config.batch_size, data.num_eval // replicas * replicas)
        batches = make(batch, drop_remainder=True) if batch else None
        steps = data.num_eval // batch if batch else 0
    if config.validation_steps:
        steps = min(steps, config.validation_steps)
    return ValidationData(summaries, batches, steps)


def warn_on_size_mismatch(meta: dict, model_config) -> None:
    stored = {"clip_frames": meta["clip_frames"], "long_frames": meta["long_frames"],
              "image_size": meta["image_size"]}
    wanted = {"clip_frames": model_config.clip_frames, "long_frames": model_config.long_frames,
              "image_size": model_config.image_size}
    if stored != wanted:
        print(f"vtcaps train: the data was written with {stored}, the model takes {wanted}; clips are "
              "re-cut and resized on the fly (preprocess with the same --preset to avoid this)",
              file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# the model


def learning_rate(config: TrainConfig, steps_per_epoch: int):
    """The optimizer's learning rate: a constant, or a cosine decay over every step of the run
    (it follows the optimizer's step count, so a resumed run continues on the same curve)."""
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=max(1, config.epochs * steps_per_epoch))
    return config.learning_rate


def compiled_model(config: TrainConfig, meta: dict, steps_per_epoch: int):
    """The model of `config` for the classes of `meta`, compiled with Adam (paper section 4.2.1).
    Call it in the strategy's scope."""
    from vtcaps_tf.models import build_model

    settings = dict(config.model_settings(), num_classes=len(meta["classes"]))
    model = build_model(config.preset, class_names=list(meta["classes"]), **settings)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate(config, steps_per_epoch),
                                        beta_1=0.9, beta_2=0.999, epsilon=1e-8),
        jit_compile=config.jit_compile)
    return model


def create_variables(model) -> None:
    """Every variable of the model and its optimizer, made by this call (in the strategy's scope): a
    checkpoint restores into them, and made inside the first traced step they trace it twice."""
    model({k: tf.zeros(spec.shape, spec.dtype) for k, spec in model.input_specs(1).items()},
          training=False)
    model.optimizer.build(model.trainable_variables)


def model_in_scope(config, data, strategy):
    """(the compiled model with every variable made in `strategy`'s scope, steps per epoch)."""
    steps = steps_per_epoch(config, data)
    with strategy.scope():
        model = compiled_model(config, data.meta, steps)
        create_variables(model)
    warn_on_size_mismatch(data.meta, model.config)
    return model, steps


@contextlib.contextmanager
def dtype_policy(mixed_precision: bool):
    """Keras' global dtype policy set for the run (mixed_float16 or unchanged), restored after."""
    previous = keras.config.dtype_policy()
    if mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def save_model_atomically(model, directory: str) -> str:
    """`directory/model.keras`, renamed into place so that a reader never sees a partial file."""
    model_path = os.path.join(directory, "model.keras")
    with atomic_files.atomic_path(model_path) as tmp_path:
        model.save(tmp_path)
    return model_path


# ---------------------------------------------------------------------------------------------
# the run directory and its checkpoints


class RunCheckpoint:
    """The model's weights, its optimizer's state, the number of finished epochs and the steps of
    the unfinished one, saved with a tf.train.CheckpointManager into `directory` and restored from
    `restore_from` (default the same; the workers of a multi-worker run all restore the chief's).

    An epoch's checkpoint is `ckpt-<finished epochs>`; one saved at a step boundary on preemption
    is `preempted-<optimizer step>` (a manager of its own name in the same folder: whichever was
    saved last is the latest)."""

    def __init__(self, model, directory: str, restore_from: str | None = None, keep: int = 2):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="finished_epochs")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="steps_in_unfinished_epoch")
        # Every variable of the model by its index, as well as the model's object graph: that
        # graph does not reach the layers Keras keeps in plain containers (most batch
        # normalisation statistics), nor the dropout layers' random state (`variables`, not
        # `weights`), without which a resumed run trains on other values than an uninterrupted one.
        variables = {str(i): v for i, v in enumerate(model.variables)}
        self._checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=self.epoch,
                                               step=self.step, variables=variables)
        self._manager = tf.train.CheckpointManager(self._checkpoint, directory, max_to_keep=keep)
        self._directory, self._keep = directory, keep
        self._restore_from = restore_from or directory
        self._optimizer = model.optimizer

    def restore(self) -> int:
        """Load the latest checkpoint, if there is one; the number of epochs it had finished
        (`steps_done` then says how many steps of the next one it had trained)."""
        latest = tf.train.latest_checkpoint(self._restore_from)
        if latest:
            self._checkpoint.restore(latest).assert_existing_objects_matched()
        return int(self.epoch.numpy())

    @property
    def steps_done(self) -> int:
        """Steps of the unfinished epoch the restored checkpoint had trained (0: none)."""
        return int(self.step.numpy())

    def save(self, finished_epochs: int) -> str:
        self.epoch.assign(finished_epochs)
        self.step.assign(0)
        return self._manager.save(checkpoint_number=finished_epochs)

    def save_step(self, finished_epochs: int, steps_done: int) -> str:
        """A checkpoint within epoch `finished_epochs` (0-based), after its `steps_done` steps."""
        self.epoch.assign(finished_epochs)
        self.step.assign(steps_done)
        manager = tf.train.CheckpointManager(self._checkpoint, self._directory, max_to_keep=self._keep,
                                             checkpoint_name="preempted")
        return manager.save(checkpoint_number=int(self._optimizer.iterations.numpy()))


def has_checkpoint(run_dir: str) -> bool:
    return tf.train.latest_checkpoint(os.path.join(run_dir, CHECKPOINT_DIR)) is not None


def _model_identity(settings: dict) -> dict:
    """What a checkpoint's variables depend on, from a train_config.json or TrainConfig.to_json()."""
    return json.loads(json.dumps({"preset": settings.get("preset"),
                                  "mixed_precision": bool(settings.get("mixed_precision")),
                                  **model_settings(settings)}))


def check_run_dir(config: TrainConfig) -> None:
    """A run directory with a checkpoint is continued only with --resume, and only with the same
    model (its preset, precision and ModelConfig settings)."""
    has_ckpt = has_checkpoint(config.run_dir)
    cfg_path = os.path.join(config.run_dir, CONFIG_FILE)
    if has_ckpt and not config.resume:
        raise SetupError(f"{config.run_dir!r} holds a checkpoint of an earlier run: pass "
                         "--resume to continue it, or choose a new --run-dir")
    if has_ckpt and tf.io.gfile.exists(cfg_path):
        with tf.io.gfile.GFile(cfg_path) as f:
            old = _model_identity(json.load(f))
        new = _model_identity(config.to_json())
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if changed:
            raise SetupError(f"cannot resume {config.run_dir!r} with a different {', '.join(changed)} "
                             f"(was {', '.join(repr(old.get(k)) for k in changed)})")
    if config.resume and not has_ckpt:
        print(f"vtcaps train: no checkpoint in {os.path.join(config.run_dir, CHECKPOINT_DIR)}, "
              "starting from epoch 1", file=sys.stderr)


def write_train_config(config: TrainConfig, run_dir: str) -> None:
    """RUN_DIR/train_config.json, replaced in one step: other workers read it while it is written."""
    atomic_files.write_json(os.path.join(run_dir, CONFIG_FILE), config.to_json())


def prepare_run_dir(config: TrainConfig, write: bool = True) -> None:
    """Check the run directory; `write`: create it and record the configuration (the one process
    of a run that writes into it)."""
    if write:
        os.makedirs(config.run_dir, exist_ok=True)
    check_run_dir(config)
    if write:
        write_train_config(config, config.run_dir)
        print(f"TensorBoard: tensorboard --logdir {os.path.abspath(os.path.join(config.run_dir, LOG_DIR))}",
              flush=True)


def make_callbacks(config: TrainConfig, model, checkpoint: RunCheckpoint, log_dir: str,
                   validation: ValidationData, write_graph: bool = True,
                   data: TrainingData | None = None) -> list:
    """The callbacks of every training, in the order they run at each epoch's end: the optimizer
    step (and with --skip-corrupt-records the clips skipped) into the logs, the checkpoint, the
    CSV history, the TensorBoard summaries."""
    os.makedirs(log_dir, exist_ok=True)
    callbacks = [cb.OptimizerStepLogger()]
    if config.skip_corrupt_records and data is not None:
        callbacks.append(cb.SkippedClipsLogger(data.skipped_clips))
    callbacks += [
        cb.EpochCheckpoint(checkpoint, every=config.checkpoint_every, epochs=config.epochs),
        cb.HistoryCSV(os.path.join(log_dir, "history.csv")),
        cb.FusionWeightSummaries(os.path.join(log_dir, "train")),
    ]
    if validation.summaries is not None:
        callbacks.append(cb.ValidationSummaries(validation.summaries, model.class_names,
                                                os.path.join(log_dir, "validation"),
                                                freq=config.summary_freq))
    callbacks.append(keras.callbacks.TensorBoard(log_dir, update_freq="epoch", write_graph=write_graph))
    return callbacks
