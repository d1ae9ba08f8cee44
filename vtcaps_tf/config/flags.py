"""Argument parsers and flag constants of `vtcaps train` and `vtcaps crossval`.

`vtcaps train --help` and its flag errors are answered from here, without TensorFlow; the
training modules build their parsers with these functions, so each flag and default is defined
once. Only the standard library is imported.
"""

from __future__ import annotations

import argparse
import dataclasses

PAPER_EPOCHS = 500  # paper section 4.2.1
DEFAULT_SHUFFLE_BUFFER = 512  # clips; a parsed clip is ~0.7 MB at the small preset
DEFAULT_COLLECTIVE_TIMEOUT_S = 300
SHARD_POLICIES = ("auto", "file", "data")


DEFAULT_PRESET = "small"  # of `vtcaps train`, `crossval`, `preprocess` and `pipeline run`
LR_SCHEDULES = ("constant", "cosine")  # training.TrainConfig.lr_schedule; the first is the default


def preset_table():
    """The preset table module (vtcaps_tf.config.presets: plain dataclasses, no TensorFlow)."""
    from vtcaps_tf.config import presets

    return presets


def preset_names() -> list[str]:
    return sorted(preset_table().PRESETS)


def _levels(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected backbone stages like 3,4 or 2,3,4, got {text!r}") from None


def add_lr_schedule_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lr-schedule", default=LR_SCHEDULES[0], choices=LR_SCHEDULES,
                   help="constant (default; the paper's), or cosine: decays the learning rate to 0 "
                        "over the run (a short run ends on a steadier model)")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The ablation switches (paper Tables 6-7, Fig 14-15), shared by `vtcaps train` and
    `vtcaps crossval`. Each defaults to the preset's value; `training.model_overrides_from_args`
    collects the ones given. The defaults shown are ModelConfig's."""
    table = preset_table()
    defaults = {f.name: f.default for f in dataclasses.fields(table.ModelConfig)}
    g = p.add_argument_group("model ablations (default: the preset's value)")
    on_off = argparse.BooleanOptionalAction
    g.add_argument("--au-attention", dest="use_au_attention", action=on_off, default=None,
                   help=f"AU attention stream in stage 1 (ModelConfig default {defaults['use_au_attention']})")
    g.add_argument("--nonlocal", dest="use_nonlocal", action=on_off, default=None,
                   help=f"non-local block after stage 4 (default {defaults['use_nonlocal']})")
    g.add_argument("--head", choices=("capsules", "softmax"), default=None,
                   help="capsules (PrimaryCaps + DigitCaps) or a pooled softmax head (default "
                        f"{'capsules' if defaults['use_capsules'] else 'softmax'})")
    g.add_argument("--no-tpn", action="store_true", help="train 3D-CapsNet alone (no TPN-ERM)")
    g.add_argument("--flow", choices=table.FLOWS, default=None,
                   help=f"TPN information flow (default {defaults['flow']})")
    g.add_argument("--fusion", choices=table.FUSIONS, default=None,
                   help=f"fusion of the adaptive flow (default {defaults['fusion']})")
    g.add_argument("--tpn-pool", choices=table.POOLS, default=None,
                   help="how each pyramid level becomes its part of the motion feature: max over "
                        f"(T, H, W) as in the paper, or mean (default {defaults['tpn_pool']})")
    g.add_argument("--tpn-levels", type=_levels, default=None,
                   help="backbone stages the pyramid collects, e.g. 2,3,4 (default "
                        f"{','.join(map(str, defaults['tpn_levels']))})")
    g.add_argument("--tpn-frame-stride", type=int, default=None, metavar="K",
                   help="TPN-ERM reads every K-th frame of its long window: the same span at 1/K of "
                        f"its backbone's cost (default {defaults['tpn_frame_stride']}: every frame)")
    g.add_argument("--matching-weight", type=float, default=None,
                   help="weight of the feature-matching (cosine distance) term; 0 turns it off "
                        f"(default {defaults['matching_weight']})")


def add_multiworker_arguments(parser: argparse.ArgumentParser) -> None:
    """The multi-worker flags of `vtcaps train` and `vtcaps crossval`."""
    group = parser.add_argument_group("multi-worker training")
    group.add_argument("--multi-worker", action="store_true",
                       help="train under MultiWorkerMirroredStrategy with a custom loop; the cluster "
                            "comes from TF_CONFIG (one worker without it)")
    group.add_argument("--local-workers", type=int, default=0, metavar="N",
                       help="start N workers on 127.0.0.1 with generated TF_CONFIGs (implies "
                            "--multi-worker); a worker that dies stops the others")
    group.add_argument("--shard-policy", choices=SHARD_POLICIES, default="auto",
                       help="how training clips are split over workers: file (each worker reads its "
                            "own shards), data (every worker reads all, keeps its part of each "
                            "batch), auto (file when every worker gets a shard; default)")
    group.add_argument("--collective-timeout", type=float, default=DEFAULT_COLLECTIVE_TIMEOUT_S,
                       metavar="S", help="seconds a cross-worker operation may wait for the other "
                                         f"workers before the run fails (default {DEFAULT_COLLECTIVE_TIMEOUT_S})")


def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vtcaps train", description=(
        "Train VT-3DCapsNet on the output of `vtcaps preprocess` with keras fit under "
        "MirroredStrategy; checkpoints (every epoch by default), TensorBoard logs, RUN_DIR/model.keras."))
    p.add_argument("--data", required=True, help="output directory of `vtcaps preprocess`")
    p.add_argument("--run-dir", required=True, help="where checkpoints, logs and model.keras go")
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=preset_names(),
                   help=f"model preset (default {DEFAULT_PRESET})")
    p.add_argument("--epochs", type=int, default=PAPER_EPOCHS, help=f"default {PAPER_EPOCHS} (the paper's)")
    p.add_argument("--batch-size", type=int, default=16, help="global batch size (default 16)")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    add_lr_schedule_argument(p)
    p.add_argument("--cpu-replicas", type=int, default=0,
                   help="without a GPU: train on N logical CPU devices (MirroredStrategy replicas)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR's last checkpoint")
    p.add_argument("--checkpoint-every", type=int, default=1, metavar="N",
                   help="checkpoint every N epochs and after the last (default 1); a resumed run "
                        "repeats at most N - 1 epochs")
    p.add_argument("--validation-freq", type=int, default=1, metavar="N",
                   help="validate every N epochs (default 1; keras fit's validation_freq)")
    p.add_argument("--mixed-precision", action="store_true", help="mixed_float16 (GPU hosts)")
    p.add_argument("--jit-compile", action="store_true", help="XLA-compile the train step (GPU hosts)")
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help="batches per epoch (default: one pass over the training clips)")
    p.add_argument("--no-augment", action="store_true", help="turn the training augmentations off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shuffle-buffer", type=int, default=DEFAULT_SHUFFLE_BUFFER,
                   help=f"clips shuffled together (default {DEFAULT_SHUFFLE_BUFFER}; 1: file order)")
    p.add_argument("--verbose", default="auto", help="keras fit verbosity: auto, 0, 1 or 2")
    add_model_arguments(p)
    add_multiworker_arguments(p)
    return p
