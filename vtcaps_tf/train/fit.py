"""Training VT-3DCapsNet on one machine with keras `fit` under MirroredStrategy (docs/design.md
section 8).

The trainer follows TFX's `run_fn` order: strategy -> datasets -> model built and compiled in the
strategy's scope -> fit with callbacks -> save/export. `train(config)` trains on a data directory
(or on given shards of it); `run_fn(fn_args)` has TFX's Trainer shape. The run directory, the
model, the datasets and the callbacks are `vtcaps_tf.train.setup`'s, shared with the multi-worker
loop.
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import tensorflow as tf

from vtcaps_tf.config.options import from_mapping
from vtcaps_tf.config.train_options import TrainConfig
from vtcaps_tf.data import features
from vtcaps_tf.data import integrity
from vtcaps_tf.train import callbacks as cb
from vtcaps_tf.train import preemption
from vtcaps_tf.train import setup
from vtcaps_tf.train.setup import SetupError, TrainResult


@dataclasses.dataclass
class FnArgs:
    """The fields of TFX's `FnArgs` this trainer reads (a TFX Trainer passes its own object)."""

    train_files: list
    eval_files: list
    model_run_dir: str
    serving_model_dir: str | None = None
    train_steps: int | None = None
    eval_steps: int | None = None
    custom_config: dict = dataclasses.field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# devices


def configure_cpu_replicas(n: int) -> None:
    """Split the first CPU into `n` logical devices; must run before TF initialises its devices."""
    if n <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have < n:
            raise SetupError(
                f"TensorFlow's devices are already initialised with {have} CPU device(s); "
                f"--cpu-replicas {n} has to be applied before anything runs on a device") from None


class MirroredStrategy(tf.distribute.MirroredStrategy):
    """`tf.distribute.MirroredStrategy` whose collective keys no earlier instance in the process used.

    Every plain MirroredStrategy numbers its collective groups from 1 and instances from 100, and
    the runtime keeps each (group, instance) key's tensor shape for the life of the process, so a
    second strategy over the same devices (a second training in one notebook or pipeline) fails with
    "Shape mismatch in the collective instance 100". Each instance here takes its own key range.
    """

    _KEY_RANGE = 1000  # group keys one strategy may use: one per distinct device set
    _instances = 0

    def __init__(self, devices=None, cross_device_ops=None):
        MirroredStrategy._instances += 1
        # MirroredExtended reads this base while it is built, so it is set before super().__init__.
        self._collective_key_base = MirroredStrategy._instances * self._KEY_RANGE
        super().__init__(devices=devices, cross_device_ops=cross_device_ops)


def make_strategy(cpu_replicas: int = 0) -> tf.distribute.Strategy:
    """All GPUs when there are any; otherwise `cpu_replicas` logical CPUs (at least one).

    One CPU device gets TensorFlow's default strategy: a single replica gains nothing from
    mirroring, and a mirrored dataset's iterator (a MultiDeviceIterator) stalls for seconds when
    fit's validation tears it down at every epoch."""
    if tf.config.list_physical_devices("GPU"):
        return MirroredStrategy()
    configure_cpu_replicas(cpu_replicas)
    n = max(1, cpu_replicas)
    if n == 1:
        return tf.distribute.get_strategy()
    return MirroredStrategy([f"/cpu:{i}" for i in range(n)])


# ---------------------------------------------------------------------------------------------
# the trainer


def train(config: TrainConfig, train_files=None, eval_files=None) -> TrainResult:
    """Train on the train/val splits of `config.data_dir` (`vtcaps preprocess`'s output), or on
    the given shards of it (cross-validation folds; `eval_files` may be empty: no validation)."""
    import keras

    # 1. strategy, first: logical CPU devices cannot be added once anything ran on a device
    strategy = make_strategy(config.cpu_replicas)
    replicas = strategy.num_replicas_in_sync
    setup.check_batch_split(config.batch_size, replicas)
    data = setup.training_data(config, train_files, eval_files)
    setup.prepare_run_dir(config)
    keras.utils.set_random_seed(config.seed)  # same initial weights and augmentations per seed

    with setup.dtype_policy(config.mixed_precision):
        # 2. model in the strategy's scope (its sizes decide how the clips are decoded)
        model, steps = setup.model_in_scope(config, data, strategy)

        # 3. datasets
        validation = setup.validation_data(config, data, model, replicas)
        fit_val_ds = None
        if validation.batches is not None:
            # A finite dataset, not `repeat()` + validation_steps: Keras (3.15) drops its
            # validation iterator at every evaluate, after pulling one batch to build; a
            # repeated pipeline then dies mid-pass, its decoded-clip cache never completes and
            # the teardown stalls the start of validation for seconds. One finite pass
            # completes the cache in epoch 1, so later iterators only read memory.
            fit_val_ds = validation.batches.take(validation.steps)

        # 4. checkpoint, callbacks and fit
        checkpoint = setup.RunCheckpoint(model, os.path.join(config.run_dir, setup.CHECKPOINT_DIR))
        initial_epoch = checkpoint.restore()
        steps_done = checkpoint.steps_done if initial_epoch < config.epochs else 0
        callbacks = setup.make_callbacks(config, model, checkpoint,
                                         os.path.join(config.run_dir, setup.LOG_DIR), validation,
                                         data=data)
        history = {}
        with (warnings.catch_warnings(), preemption.PreemptionWatch() as watch,
              integrity.naming_corrupt_shard(data.train_files + data.eval_files)):
            # The validation set is one finite pass (above): Keras warns at its end every epoch,
            # although reading it to the end is the point.
            warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
            callbacks.append(cb.PreemptionCheckpoint(watch, checkpoint, steps, config.epochs,
                                                     initial_epoch, steps_done))
            # A run saved within an epoch trains that epoch's remaining steps in a fit of its own;
            # each fit reads the data from where the steps before it stopped.
            parts = [(initial_epoch, initial_epoch + 1, steps - steps_done)] if steps_done else []
            parts.append((initial_epoch + bool(steps_done), config.epochs, steps))
            for first, last, epoch_steps in parts:
                if first >= last:
                    continue
                train_ds = setup.train_dataset(config, data, model,
                                               skip_batches=first * steps + steps - epoch_steps)
                fitted = model.fit(train_ds, epochs=last, initial_epoch=first,
                                   steps_per_epoch=epoch_steps, validation_data=fit_val_ds,
                                   validation_freq=config.validation_freq, callbacks=callbacks,
                                   verbose=config.verbose, shuffle=False)  # the dataset shuffles itself
                for key, values in fitted.history.items():
                    history.setdefault(key, []).extend(values)

        # 5. the final model
        model_path = setup.save_model_atomically(model, config.run_dir)
    return TrainResult(model=model, history=history, model_path=model_path,
                       initial_epoch=initial_epoch, replicas=replicas,
                       skipped_clips=data.skipped_clips, corrupt_shards=data.corrupt_shards)


def run_fn(fn_args) -> TrainResult:
    """TFX Trainer entry point. `custom_config` holds the keys of the pipeline's `train` section
    (TrainConfig's config keys) and `data_dir` when the metadata.json is not beside the training
    files; the SavedModel goes to serving_model_dir."""
    from vtcaps_tf.export.saved_model import save_serving_model

    custom = dict(fn_args.custom_config or {})
    train_files = sorted(f for p in fn_args.train_files for f in tf.io.gfile.glob(p))
    eval_files = sorted(f for p in (fn_args.eval_files or []) for f in tf.io.gfile.glob(p))
    if not train_files:
        raise features.SchemaError(f"no training files match {fn_args.train_files}")
    data_dir = custom.pop("data_dir", None) or os.path.dirname(train_files[0])
    config = from_mapping(TrainConfig, custom, "custom_config", data_dir=data_dir,
                          run_dir=fn_args.model_run_dir)
    if fn_args.train_steps:
        config.steps_per_epoch = max(1, fn_args.train_steps // config.epochs)
    if fn_args.eval_steps:
        config.validation_steps = fn_args.eval_steps
    result = train(config, train_files, eval_files)
    if fn_args.serving_model_dir:
        save_serving_model(result.model, fn_args.serving_model_dir)
    return result
