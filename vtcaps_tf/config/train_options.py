"""The options of training, defined once (docs/design.md section 12): `vtcaps train` and `vtcaps
crossval` build their flags from these dataclasses, the pipeline's `train` and `crossval` sections
their keys, and both are checked by the fields' types and rules (vtcaps_tf/config/options.py).

    TrainingOptions    what training and cross-validation share: hyperparameters, the model
                       ablation switches (paper Tables 6-7), augmentation, multi-worker settings
    TrainConfig        + one run's data and run directory, devices, checkpoints (`vtcaps train`,
                       the `train` section, `vtcaps_tf.train.fit.train`)
    CrossvalOptions    + the fold data, the output directory, the validation folds (`vtcaps
                       crossval`, the `crossval` section, `vtcaps_tf.train.crossval.crossval`)

Imports only the standard library and the rest of vtcaps_tf.config (no TensorFlow).
"""

from __future__ import annotations

import dataclasses
import typing

from vtcaps_tf.config.augment import AugmentConfig
from vtcaps_tf.config.options import OptionError, check, jsonable, option
from vtcaps_tf.config.presets import DEFAULT_PRESET, PRESETS, ModelConfig, preset_names
from vtcaps_tf.config.pyramid_options import FLOWS, FUSIONS, POOLS

PAPER_EPOCHS = 500  # paper section 4.2.1
DEFAULT_SHUFFLE_BUFFER = 512  # clips; a parsed clip is ~0.7 MB at the small preset
DEFAULT_COLLECTIVE_TIMEOUT_S = 300.0
LR_SCHEDULES = ("constant", "cosine")  # the first is the default
SHARD_POLICIES = ("auto", "file", "data")
HEADS = ("capsules", "softmax")  # `head`: ModelConfig.use_capsules on or off
VERBOSITY = ("auto", 0, 1, 2)  # keras fit's

ABLATIONS = "model ablations (default: the preset's value)"
MULTI_WORKER = "multi-worker training"

_MODEL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
# Switches named as ModelConfig names the field they set (`head` and `use_tpn` are handled apart).
_MODEL_SWITCHES = ("use_au_attention", "use_nonlocal", "flow", "fusion", "tpn_pool", "tpn_levels",
                   "tpn_frame_stride", "matching_weight")


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def model_settings(values: typing.Mapping) -> dict:
    """The ModelConfig fields a set of training options changes from its preset: `model_overrides`
    and the switches that are set. Reads a mapping (a TrainConfig's fields or a train_config.json),
    so that the model of a stored run and of a new one can be compared."""
    out = {k: _tuples(v) for k, v in (values.get("model_overrides") or {}).items()}
    for name in _MODEL_SWITCHES:
        if values.get(name) is not None:
            out[name] = _tuples(values[name])
    if values.get("head") is not None:
        out["use_capsules"] = values["head"] == "capsules"
    if values.get("use_tpn") is False:
        out["use_tpn"] = False
    return out


@dataclasses.dataclass(kw_only=True)
class ModelSwitches:
    """The ablation switches of paper Tables 6-7 (and Fig 14-15); None: the preset's value."""

    use_au_attention: bool | None = option(
        None, flag="--au-attention", group=ABLATIONS,
        help=f"AU attention stream in stage 1 (ModelConfig default {_MODEL_DEFAULTS['use_au_attention']})")
    use_nonlocal: bool | None = option(
        None, flag="--nonlocal", group=ABLATIONS,
        help=f"non-local block after stage 4 (default {_MODEL_DEFAULTS['use_nonlocal']})")
    head: str | None = option(
        None, choices=HEADS, group=ABLATIONS,
        help="capsules (PrimaryCaps + DigitCaps) or a pooled softmax head (default "
             f"{'capsules' if _MODEL_DEFAULTS['use_capsules'] else 'softmax'})")
    use_tpn: bool = option(True, flag="--no-tpn", group=ABLATIONS,
                           help="train 3D-CapsNet alone (no TPN-ERM)")
    flow: str | None = option(None, choices=FLOWS, group=ABLATIONS,
                              help=f"TPN information flow (default {_MODEL_DEFAULTS['flow']})")
    fusion: str | None = option(None, choices=FUSIONS, group=ABLATIONS,
                                help=f"fusion of the adaptive flow (default {_MODEL_DEFAULTS['fusion']})")
    tpn_pool: str | None = option(
        None, choices=POOLS, group=ABLATIONS,
        help="how each pyramid level becomes its part of the motion feature: max over (T, H, W) as "
             f"in the paper, or mean (default {_MODEL_DEFAULTS['tpn_pool']})")
    tpn_levels: tuple[int, ...] | None = option(
        None, group=ABLATIONS,
        help="backbone stages the pyramid collects, e.g. 2,3,4 (default "
             f"{','.join(map(str, _MODEL_DEFAULTS['tpn_levels']))})")
    tpn_frame_stride: int | None = option(
        None, minimum=1, metavar="K", group=ABLATIONS,
        help="TPN-ERM reads every K-th frame of its long window: the same span at 1/K of its "
             f"backbone's cost (default {_MODEL_DEFAULTS['tpn_frame_stride']}: every frame)")
    matching_weight: float | None = option(
        None, minimum=0.0, group=ABLATIONS,
        help="weight of the feature-matching (cosine distance) term; 0 turns it off "
             f"(default {_MODEL_DEFAULTS['matching_weight']})")
    model_overrides: dict = option(
        default_factory=dict, cli=False,
        help="other ModelConfig fields over the preset's (a switch above and this may not disagree)")


@dataclasses.dataclass(kw_only=True)
class MultiWorkerOptions:
    """How a run spreads over workers (command line only: the pipeline trains on one machine)."""

    multi_worker: bool = option(
        False, config=False, group=MULTI_WORKER,
        help="train under MultiWorkerMirroredStrategy with a custom loop; the cluster comes from "
             "TF_CONFIG (one worker without it)")
    local_workers: int = option(
        0, minimum=0, metavar="N", config=False, group=MULTI_WORKER,
        help="start N workers on 127.0.0.1 with generated TF_CONFIGs (implies --multi-worker); a "
             "worker that dies stops the others")
    shard_policy: str = option(
        "auto", choices=SHARD_POLICIES, config=False, group=MULTI_WORKER,
        help="how training clips are split over workers: file (each worker reads its own shards), "
             "data (every worker reads all, keeps its part of each batch), auto (file when every "
             "worker gets a shard; default)")
    collective_timeout: float = option(
        DEFAULT_COLLECTIVE_TIMEOUT_S, minimum=1.0, metavar="S", config=False, group=MULTI_WORKER,
        help="seconds a cross-worker operation may wait for the other workers before the run fails "
             f"(default {DEFAULT_COLLECTIVE_TIMEOUT_S:g})")


@dataclasses.dataclass(kw_only=True)
class TrainingOptions(MultiWorkerOptions, ModelSwitches):
    """What `vtcaps train` and `vtcaps crossval` share (their sections too)."""

    SECTION: typing.ClassVar[str] = "training"  # how errors of a Python-made instance name it

    preset: str = option(DEFAULT_PRESET, choices=preset_names(), help="model preset")
    epochs: int = option(PAPER_EPOCHS, minimum=1,
                         help=f"epochs of a training (of each fold's); default {PAPER_EPOCHS}, the paper's")
    batch_size: int = option(16, minimum=1, help="global batch size, split over the replicas")
    learning_rate: float = option(1e-3, help="Adam learning rate")
    lr_schedule: str = option(
        LR_SCHEDULES[0], choices=LR_SCHEDULES,
        help="constant (default; the paper's), or cosine: decays the learning rate to 0 over the "
             "run (a short run ends on a steadier model)")
    steps_per_epoch: int | None = option(None, minimum=1,
                                         help="batches per epoch (default: one pass over the training clips)")
    augment: AugmentConfig | bool = option(
        True, flag="--no-augment",
        help="turn the training augmentations off (in a config: true, false or a mapping of "
             "AugmentConfig fields)")
    seed: int = option(0, help="seed of the initial weights, the shuffling and the augmentations")
    skip_corrupt_records: bool = option(
        False, help="train on without a corrupt or truncated shard's unreadable rest (counted in "
                    "the history and the report) rather than stop naming it")
    verbose: int | str = option("auto", choices=VERBOSITY, help="keras fit verbosity: auto, 0, 1 or 2")

    def __post_init__(self):
        if self.augment is True:
            self.augment = AugmentConfig()
        elif self.augment is False:
            self.augment = AugmentConfig.none()
        check(self, self.SECTION)
        if self.learning_rate <= 0:
            raise OptionError(f"{self.SECTION}.learning_rate: must be > 0, got {self.learning_rate!r}")
        self._check_model()

    def _check_model(self):
        where = f"{self.SECTION}.model_overrides"
        unknown = sorted(set(self.model_overrides) - set(_MODEL_DEFAULTS))
        if unknown:
            raise OptionError(f"{where}: unknown ModelConfig fields {unknown}")
        switches = model_settings({f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                                   if f.name != "model_overrides"})
        for key, value in switches.items():
            if key in self.model_overrides and _tuples(self.model_overrides[key]) != value:
                raise OptionError(f"{where}: {key}={self.model_overrides[key]!r} disagrees with the "
                                  f"switch that sets it to {value!r}")
        try:  # the model the run will build, short of its class count (known from the data)
            dataclasses.replace(PRESETS[self.preset], **self.model_settings())
        except (TypeError, ValueError) as err:
            raise OptionError(f"{self.SECTION}: the model of preset {self.preset!r} with "
                              f"{self.model_settings()}: {err}") from None

    def model_settings(self) -> dict:
        """ModelConfig fields over the preset's (`build_model(preset, **settings)`)."""
        return model_settings({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})


@dataclasses.dataclass(kw_only=True)
class TrainConfig(TrainingOptions):
    """One training run (`vtcaps train`, the pipeline's `train` section, TFX's custom_config)."""

    SECTION: typing.ClassVar[str] = "train"

    data_dir: str = option(flag="--data", config=False, help="output directory of `vtcaps preprocess`")
    run_dir: str = option(config=False, help="where checkpoints, logs and model.keras go")
    cpu_replicas: int = option(0, minimum=0, metavar="N",
                               help="without a GPU: train on N logical CPU devices (MirroredStrategy "
                                    "replicas)")
    resume: bool = option(False, config=False, help="continue from RUN_DIR's last checkpoint")
    checkpoint_every: int = option(1, minimum=1, metavar="N",
                                   help="checkpoint every N epochs and after the last (default 1); a "
                                        "resumed run repeats at most N - 1 epochs")
    validation_freq: int = option(1, minimum=1, metavar="N",
                                  help="validate every N epochs (default 1; keras fit's validation_freq)")
    summary_freq: int = option(1, minimum=0, cli=False,
                               help="epochs between confusion-matrix / per-class F1 summaries (0: none)")
    mixed_precision: bool = option(False, help="mixed_float16 (GPU hosts)")
    # XLA; slower on CPU (docs/design.md section 15), try it on GPU.
    jit_compile: bool = option(False, help="XLA-compile the train step (GPU hosts)")
    shuffle_buffer: int = option(DEFAULT_SHUFFLE_BUFFER, minimum=1,
                                 help="clips shuffled together (1: file order)")
    # Set by a TFX Trainer (eval_steps) or a caller, not by flags or configs.
    validation_steps: int | None = None
    cache: str = "auto"  # vtcaps_tf.data.dataset.make_dataset's

    def __post_init__(self):
        super().__post_init__()
        if self.cpu_replicas > 1 and (self.multi_worker or self.local_workers):
            raise OptionError(f"{self.SECTION}: --cpu-replicas does not combine with multi-worker "
                              "training (one replica per worker on CPU)")

    def to_json(self) -> dict:
        """Every field, JSON-ready (RUN_DIR/train_config.json)."""
        return jsonable(dataclasses.asdict(self))


@dataclasses.dataclass(kw_only=True)
class CrossvalOptions(TrainingOptions):
    """A K-fold cross-validation (`vtcaps crossval`, the pipeline's `crossval` section)."""

    SECTION: typing.ClassVar[str] = "crossval"

    data_dir: str = option(flag="--data", config=False,
                           help="output directory of `vtcaps preprocess --folds K`")
    output: str = option(config=False, help="directory for the fold runs and the reports")
    val_folds: int = option(1, minimum=0,
                            help="folds after the test fold used for validation (default 1; 0: none)")
    verbose: int | str = option(2, choices=VERBOSITY, help="keras fit verbosity: auto, 0, 1 or 2 (default 2)")

    def fold_config(self, run_dir: str) -> TrainConfig:
        """The training of one fold: the shared options, resumed from its checkpoint."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(TrainingOptions)}
        return TrainConfig(**shared, data_dir=self.data_dir, run_dir=run_dir, resume=True)
