"""Training VT-3DCapsNet with keras `fit` under MirroredStrategy (docs/design.md section 8).

The trainer follows TFX's `run_fn` order: strategy -> datasets -> model built and compiled in the
strategy's scope -> fit with callbacks -> save/export. `run_fn(fn_args)` has TFX's Trainer shape;
`train(TrainConfig(...))` and `vtcaps train` are the same path with a data directory.

Run directory:
  RUN_DIR/train_config.json   the configuration (checked again on --resume)
  RUN_DIR/checkpoints/        weights + optimizer state + epoch, written at every epoch end
  RUN_DIR/logs/train, logs/validation   TensorBoard event files
  RUN_DIR/logs/history.csv    one row per finished epoch (appended across resumes)
  RUN_DIR/model.keras         the final model
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings

import tensorflow as tf

from vtcaps_tf.data import dataset as data_lib
from vtcaps_tf.data import features
from vtcaps_tf.config.presets import PRESETS, ModelConfig
from vtcaps_tf.config.flags import DEFAULT_SHUFFLE_BUFFER, PAPER_EPOCHS  # noqa: F401 - public names
from vtcaps_tf.config.flags import add_model_arguments  # noqa: F401 - public name
from vtcaps_tf.config import flags as cli_parsers

# Set to N to end the process hard right after epoch N's checkpoint (resume tests).
EXIT_AFTER_EPOCH_ENV = "VTCAPS_EXIT_AFTER_EPOCH"
# Fields whose change between a run and its resume would make the checkpoint meaningless.
_MODEL_FIELDS = ("preset", "flow", "fusion", "use_tpn", "model_overrides", "mixed_precision")


class SetupError(ValueError):
    """The run cannot start as configured (run directory state, devices, batch split)."""


@dataclasses.dataclass
class TrainConfig:
    data_dir: str
    run_dir: str
    preset: str = cli_parsers.DEFAULT_PRESET
    epochs: int = PAPER_EPOCHS
    batch_size: int = 16  # global, split across the replicas
    learning_rate: float = 1e-3
    lr_schedule: str = cli_parsers.LR_SCHEDULES[0]  # "cosine": decays to 0 over the run's steps
    cpu_replicas: int = 0  # >1: split the CPU into this many logical devices (no GPU present)
    resume: bool = False
    mixed_precision: bool = False
    jit_compile: bool = False  # XLA; slower on CPU (docs/design.md section 15), try it on GPU
    flow: str | None = None  # TPN flow, default the preset's
    fusion: str | None = None
    use_tpn: bool = True
    model_overrides: dict = dataclasses.field(default_factory=dict)
    augment: data_lib.AugmentConfig = dataclasses.field(default_factory=data_lib.AugmentConfig)
    steps_per_epoch: int | None = None  # default: one pass over the training clips
    validation_steps: int | None = None
    summary_freq: int = 1  # epochs between confusion-matrix / per-class F1 summaries
    validation_freq: int = 1  # epochs between validation passes (fit's `validation_freq`)
    checkpoint_every: int = 1  # epochs between checkpoints (and after the last epoch)
    cache: str = "auto"
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER
    seed: int = 0
    verbose: int | str = "auto"

    def __post_init__(self):
        if self.epochs < 1:
            raise SetupError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise SetupError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.learning_rate <= 0:
            raise SetupError(f"learning_rate must be > 0, got {self.learning_rate}")
        for every in ("checkpoint_every", "validation_freq"):
            if getattr(self, every) < 1:
                raise SetupError(f"{every} must be >= 1, got {getattr(self, every)}")
        if self.lr_schedule not in cli_parsers.LR_SCHEDULES:
            raise SetupError(f"unknown lr_schedule {self.lr_schedule!r}; choose from "
                             f"{', '.join(cli_parsers.LR_SCHEDULES)}")
        if self.preset not in PRESETS:
            raise SetupError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        unknown = sorted(set(self.model_overrides) - {f.name for f in dataclasses.fields(ModelConfig)})
        if unknown:
            raise SetupError(f"model_overrides: unknown ModelConfig fields {unknown}")
        if isinstance(self.augment, dict):
            self.augment = data_lib.AugmentConfig.from_dict(self.augment)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


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


@dataclasses.dataclass
class TrainResult:
    model: object
    history: dict
    model_path: str
    initial_epoch: int
    replicas: int


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


def _split_info(data_dir, split, meta):
    files = features.split_files(data_dir, split)
    count = (meta.get("counts") or {}).get(split)
    if files and count is None:
        count = data_lib.count_clips(files)
    return files, int(count or 0)


def save_model_atomically(model, directory: str) -> str:
    """`directory/model.keras`, renamed into place so that a reader never sees a partial file."""
    model_path = os.path.join(directory, "model.keras")
    tmp_path = os.path.join(directory, ".model.tmp.keras")
    model.save(tmp_path)
    os.replace(tmp_path, model_path)
    return model_path


def train(config: TrainConfig) -> TrainResult:
    """Train from a preprocessing output directory (`vtcaps preprocess`), see the module doc."""
    meta = features.read_metadata(config.data_dir)
    if meta.get("folds"):
        raise features.SchemaError(f"{config.data_dir!r} is split into {meta['folds']} cross-"
                                   "validation folds: train on it with `vtcaps crossval`")
    train_files, n_train = _split_info(config.data_dir, "train", meta)
    if not train_files or n_train == 0:
        raise features.SchemaError(f"{config.data_dir!r} holds no training clips "
                                   f"(train-*{features.SHARD_SUFFIX} missing or empty)")
    eval_files, n_eval = _split_info(config.data_dir, "val", meta)
    return _fit(config, meta, train_files, n_train, eval_files if n_eval else [], n_eval)


def train_on_files(config: TrainConfig, train_files, eval_files=()) -> TrainResult:
    """Train on explicit shards of `config.data_dir` (cross-validation folds); eval_files may be
    empty (no validation)."""
    meta = features.read_metadata(config.data_dir)
    n_train = data_lib.count_clips(train_files) if train_files else 0
    if n_train == 0:
        raise features.SchemaError(f"no training clips in {list(train_files)}")
    n_eval = data_lib.count_clips(eval_files) if eval_files else 0
    return _fit(config, meta, list(train_files), n_train, list(eval_files) if n_eval else [], n_eval)


def run_fn(fn_args) -> TrainResult:
    """TFX Trainer entry point. `custom_config` holds TrainConfig fields (and `data_dir` when the
    metadata.json is not beside the training files); the SavedModel goes to serving_model_dir."""
    from vtcaps_tf.export.saved_model import save_serving_model

    custom = dict(fn_args.custom_config or {})
    train_files = sorted(f for p in fn_args.train_files for f in tf.io.gfile.glob(p))
    eval_files = sorted(f for p in (fn_args.eval_files or []) for f in tf.io.gfile.glob(p))
    if not train_files:
        raise features.SchemaError(f"no training files match {fn_args.train_files}")
    data_dir = custom.pop("data_dir", None) or os.path.dirname(train_files[0])
    meta = features.read_metadata(data_dir)
    config = TrainConfig(data_dir=data_dir, run_dir=fn_args.model_run_dir, **custom)
    if fn_args.train_steps:
        config.steps_per_epoch = max(1, fn_args.train_steps // config.epochs)
    if fn_args.eval_steps:
        config.validation_steps = fn_args.eval_steps
    n_train = data_lib.count_clips(train_files)
    n_eval = data_lib.count_clips(eval_files) if eval_files else 0
    result = _fit(config, meta, train_files, n_train, eval_files if n_eval else [], n_eval)
    if fn_args.serving_model_dir:
        save_serving_model(result.model, fn_args.serving_model_dir)
    return result


def write_train_config(config: TrainConfig, run_dir: str) -> None:
    """RUN_DIR/train_config.json, replaced in one step: other workers read it while it is written."""
    path = os.path.join(run_dir, "train_config.json")
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(config.to_json(), f, indent=2)
    os.replace(tmp, path)


def _check_run_dir(config: TrainConfig, ckpt_dir: str) -> None:
    has_ckpt = tf.io.gfile.exists(os.path.join(ckpt_dir, "training_metadata.json"))
    cfg_path = os.path.join(config.run_dir, "train_config.json")
    if has_ckpt and not config.resume:
        raise SetupError(f"{config.run_dir!r} holds a checkpoint of an earlier run: pass "
                         "--resume to continue it, or choose a new --run-dir")
    if has_ckpt and tf.io.gfile.exists(cfg_path):
        with tf.io.gfile.GFile(cfg_path) as f:
            old = json.load(f)
        new = json.loads(json.dumps(config.to_json()))  # tuples -> lists, as stored
        changed = [k for k in _MODEL_FIELDS if old.get(k) != new.get(k)]
        if changed:
            raise SetupError(f"cannot resume {config.run_dir!r} with a different {', '.join(changed)} "
                             f"(was {', '.join(repr(old.get(k)) for k in changed)})")
    if config.resume and not has_ckpt:
        print(f"vtcaps train: no checkpoint in {ckpt_dir}, starting from epoch 1", file=sys.stderr)


def learning_rate(config: TrainConfig, steps_per_epoch: int):
    """The optimizer's learning rate: a constant, or a cosine decay over every step of the run
    (it follows the optimizer's step count, so a resumed run continues on the same curve)."""
    import keras

    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=max(1, config.epochs * steps_per_epoch))
    return config.learning_rate


def _build_and_compile(config: TrainConfig, meta: dict, steps_per_epoch: int):
    import keras

    from vtcaps_tf.models import build_model

    overrides = dict(config.model_overrides)
    overrides["num_classes"] = len(meta["classes"])
    for key in ("flow", "fusion"):
        if getattr(config, key):
            overrides[key] = getattr(config, key)
    if not config.use_tpn:
        overrides["use_tpn"] = False
    model = build_model(config.preset, class_names=list(meta["classes"]), **overrides)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate(config, steps_per_epoch), beta_1=0.9,
                                        beta_2=0.999, epsilon=1e-8),
        jit_compile=config.jit_compile)
    return model


def _dummy_batch(model, batch=1):
    """Zeros shaped like the model's inputs (its input contract)."""
    return {k: tf.zeros(spec.shape, spec.dtype) for k, spec in model.input_specs(batch).items()}


def _fit(config: TrainConfig, meta, train_files, n_train, eval_files, n_eval) -> TrainResult:
    import keras

    from vtcaps_tf.train import callbacks as cb

    run_dir = config.run_dir
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    log_dir = os.path.join(run_dir, "logs")
    os.makedirs(run_dir, exist_ok=True)
    _check_run_dir(config, ckpt_dir)
    write_train_config(config, run_dir)
    print(f"TensorBoard: tensorboard --logdir {os.path.abspath(log_dir)}", flush=True)

    keras.utils.set_random_seed(config.seed)  # same initial weights and augmentations per seed

    # 1. strategy
    strategy = make_strategy(config.cpu_replicas)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise SetupError(f"the global batch size {config.batch_size} does not split evenly over "
                         f"{replicas} replicas")

    previous_policy = keras.config.dtype_policy()
    if config.mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        # 2. model in the strategy's scope (its sizes decide how the clips are decoded)
        steps = config.steps_per_epoch or data_lib.steps_per_epoch(n_train, config.batch_size)
        with strategy.scope():
            model = _build_and_compile(config, meta, steps)
            model(_dummy_batch(model), training=False)  # build: checkpoints need the variables
            # Built here, not in the first traced step: creating variables there traces it twice.
            model.optimizer.build(model.trainable_variables)
        mc = model.config
        _warn_on_size_mismatch(meta, mc)

        # 3. datasets
        train_ds = data_lib.make_dataset(
            train_files, model.contract, config.batch_size,
            training=True, augment=config.augment, num_records=n_train, cache=config.cache,
            shuffle_buffer=config.shuffle_buffer, seed=config.seed)
        val_ds = fit_val_ds = None
        if eval_files:
            val_ds = data_lib.make_dataset(
                eval_files, model.contract, config.batch_size,
                training=False, num_records=n_eval, cache=config.cache)
            fit_val_ds, val_batch = val_ds, config.batch_size
            if replicas > 1:
                # A partial batch leaves a replica without clips and its mean loss undefined: fit's
                # validation losses use whole batches; the summaries below still see every clip.
                val_batch = min(config.batch_size, n_eval // replicas * replicas)
                fit_val_ds = data_lib.make_dataset(
                    eval_files, model.contract, val_batch,
                    training=False, num_records=n_eval, cache=config.cache,
                    drop_remainder=True) if val_batch else None
            if fit_val_ds is not None and config.validation_steps:
                # A finite dataset, not `repeat()` + validation_steps: Keras (3.15) drops its
                # validation iterator at every evaluate, after pulling one batch to build; a
                # repeated pipeline then dies mid-pass, its decoded-clip cache never completes and
                # the teardown stalls the start of validation for seconds. One finite pass
                # completes the cache in epoch 1, so later iterators only read memory.
                fit_val_ds = fit_val_ds.take(config.validation_steps)

        # 4. callbacks and fit
        callbacks = [
            cb.OptimizerStepLogger(),
            cb.EpochBackup(ckpt_dir, every=config.checkpoint_every, delete_checkpoint=False,
                           double_checkpoint=True),
            cb.HistoryCSV(os.path.join(log_dir, "history.csv")),
            cb.FusionWeightSummaries(os.path.join(log_dir, "train")),
        ]
        if val_ds is not None:
            callbacks.append(cb.ValidationSummaries(val_ds, model.class_names,
                                                    os.path.join(log_dir, "validation"),
                                                    freq=config.summary_freq))
        callbacks.append(keras.callbacks.TensorBoard(log_dir, update_freq="epoch"))
        exit_after = os.environ.get(EXIT_AFTER_EPOCH_ENV)
        if exit_after:
            callbacks.append(cb.HardExitAfterEpoch(int(exit_after)))
        os.makedirs(log_dir, exist_ok=True)

        with warnings.catch_warnings():
            # The validation set is one finite pass (above): Keras warns at its end every epoch,
            # although reading it to the end is the point.
            warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
            history = model.fit(train_ds, epochs=config.epochs, steps_per_epoch=steps,
                                validation_data=fit_val_ds, validation_freq=config.validation_freq,
                                callbacks=callbacks, verbose=config.verbose,
                                shuffle=False)  # the dataset shuffles itself
        initial_epoch = int(history.epoch[0]) if history.epoch else config.epochs

        # 5. the final model
        model_path = save_model_atomically(model, run_dir)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    return TrainResult(model=model, history=dict(history.history), model_path=model_path,
                       initial_epoch=initial_epoch, replicas=replicas)


def _warn_on_size_mismatch(meta, mc):
    stored = {"clip_frames": meta["clip_frames"], "long_frames": meta["long_frames"],
              "image_size": meta["image_size"]}
    wanted = {"clip_frames": mc.clip_frames, "long_frames": mc.long_frames, "image_size": mc.image_size}
    if stored != wanted:
        print(f"vtcaps train: the data was written with {stored}, the model takes {wanted}; clips are "
              "re-cut and resized on the fly (preprocess with the same --preset to avoid this)",
              file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# command line


def model_overrides_from_args(args) -> dict:
    """The ModelConfig fields set by `add_model_arguments`' flags (flow, fusion and --no-tpn go
    to TrainConfig's own fields)."""
    out = {}
    for field in ("use_au_attention", "use_nonlocal", "tpn_levels", "tpn_pool", "tpn_frame_stride",
                  "matching_weight"):
        if getattr(args, field) is not None:
            out[field] = getattr(args, field)
    if args.head is not None:
        out["use_capsules"] = args.head == "capsules"
    return out


def build_parser() -> argparse.ArgumentParser:
    return cli_parsers.train_parser()  # defined without TensorFlow, for a fast `--help`


def config_from_args(args) -> TrainConfig:
    verbose = args.verbose if args.verbose == "auto" else int(args.verbose)
    return TrainConfig(
        data_dir=args.data, run_dir=args.run_dir, preset=args.preset, epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.learning_rate, lr_schedule=args.lr_schedule,
        cpu_replicas=args.cpu_replicas,
        resume=args.resume, mixed_precision=args.mixed_precision, jit_compile=args.jit_compile,
        flow=args.flow, fusion=args.fusion, use_tpn=not args.no_tpn,
        model_overrides=model_overrides_from_args(args),
        augment=data_lib.AugmentConfig.none() if args.no_augment else data_lib.AugmentConfig(),
        steps_per_epoch=args.steps_per_epoch, seed=args.seed, verbose=verbose,
        checkpoint_every=args.checkpoint_every, validation_freq=args.validation_freq,
        shuffle_buffer=args.shuffle_buffer)


def cli_main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.local_workers:
        from vtcaps_tf.train import local_cluster

        argv = list(sys.argv[1:] if argv is None else argv)
        return local_cluster.launch("vtcaps_tf.train.fit", argv, args.local_workers)
    try:
        config = config_from_args(args)
        if args.multi_worker:
            from vtcaps_tf.train import multiworker

            return multiworker.cli_train(config, args)
        # Before anything touches a device: logical CPU devices cannot be added afterwards.
        if args.cpu_replicas > 1 and not tf.config.list_physical_devices("GPU"):
            configure_cpu_replicas(args.cpu_replicas)
        result = train(config)
    except (features.SchemaError, SetupError) as err:
        print(f"vtcaps train: {err}", file=sys.stderr)
        return 2
    print(f"model: {result.model_path}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
