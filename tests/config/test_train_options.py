"""Training's options are defined once: the flags of `vtcaps train` and `vtcaps crossval` and the keys
of the pipeline's `train` and `crossval` sections all come from the dataclasses of
vtcaps_tf/config/train_options.py, and are checked by them."""

import argparse
import dataclasses
import sys

import pytest

from vtcaps_tf.cli import crossval as crossval_cli
from vtcaps_tf.cli import train as train_cli
from vtcaps_tf.config.augment import AugmentConfig
from vtcaps_tf.config.options import (OptionError, add_arguments, config_keys, flag_names, from_args,
                                      from_mapping, option)
from vtcaps_tf.config.train_options import (CrossvalOptions, TrainConfig, TrainingOptions,
                                            model_settings)

# The flags the commands have always had (their meanings are checked below and in the trainers'
# tests); each --x/--no-x pair is one on/off option.
ABLATION_FLAGS = {"--au-attention", "--no-au-attention", "--nonlocal", "--no-nonlocal", "--head",
                  "--no-tpn", "--flow", "--fusion", "--tpn-pool", "--tpn-levels", "--tpn-frame-stride",
                  "--matching-weight"}
MULTI_WORKER_FLAGS = {"--multi-worker", "--local-workers", "--shard-policy", "--collective-timeout"}
TRAIN_FLAGS = {"--data", "--run-dir", "--preset", "--epochs", "--batch-size", "--learning-rate",
               "--lr-schedule", "--cpu-replicas", "--resume", "--checkpoint-every", "--validation-freq",
               "--mixed-precision", "--jit-compile", "--steps-per-epoch", "--no-augment", "--seed",
               "--shuffle-buffer", "--skip-corrupt-records", "--verbose"} | ABLATION_FLAGS | MULTI_WORKER_FLAGS
CROSSVAL_FLAGS = {"--data", "--output", "--preset", "--epochs", "--batch-size", "--learning-rate",
                  "--lr-schedule", "--val-folds", "--no-augment", "--steps-per-epoch", "--seed",
                  "--skip-corrupt-records", "--verbose"} | ABLATION_FLAGS | MULTI_WORKER_FLAGS


def _flags(parser) -> dict:
    """dest -> the option strings of every flag of `parser` but --help."""
    return {a.dest: set(a.option_strings) for a in parser._actions if a.dest != "help"}


def _fields(cls) -> set:
    return {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("cli, cls, expected", [(train_cli, TrainConfig, TRAIN_FLAGS),
                                                (crossval_cli, CrossvalOptions, CROSSVAL_FLAGS)])
def test_every_flag_is_an_option_field_and_every_existing_flag_is_kept(cli, cls, expected):
    flags = _flags(cli.build_parser())
    assert set().union(*flags.values()) == expected
    assert set(flags) <= _fields(cls)  # each flag sets the field of its name
    for dest, strings in flags.items():
        assert flag_names(cls)[dest] in strings


def test_the_sections_keys_are_the_option_fields_and_the_shared_ones_are_in_both():
    shared = set(config_keys(TrainingOptions))
    assert shared <= set(config_keys(TrainConfig)) and shared <= set(config_keys(CrossvalOptions))
    # The keys crossval's section lacked: the model switches.
    assert {"model_overrides", "flow", "fusion", "use_tpn", "head", "tpn_levels"} <= set(
        config_keys(CrossvalOptions))
    assert set(config_keys(CrossvalOptions)) - shared == {"val_folds"}
    assert set(config_keys(TrainConfig)) - shared == {
        "cpu_replicas", "checkpoint_every", "validation_freq", "summary_freq", "mixed_precision",
        "jit_compile", "shuffle_buffer"}
    # Paths are the pipeline's, the launcher's settings the command line's: flags, not keys.
    for key in ("data_dir", "run_dir", "output", "resume", "multi_worker", "local_workers"):
        assert key not in config_keys(TrainConfig) + config_keys(CrossvalOptions)


def test_a_field_added_to_the_shared_options_becomes_a_flag_and_a_key_of_both():
    @dataclasses.dataclass(kw_only=True)
    class SharedPlus(TrainingOptions):
        warmup_epochs: int = option(0, minimum=0, help="epochs of linear learning-rate warm-up")

    @dataclasses.dataclass(kw_only=True)
    class Train(TrainConfig, SharedPlus):
        pass

    @dataclasses.dataclass(kw_only=True)
    class Crossval(CrossvalOptions, SharedPlus):
        pass

    for cls, paths in ((Train, ["--data", "d", "--run-dir", "r"]),
                       (Crossval, ["--data", "d", "--output", "o"])):
        parser = argparse.ArgumentParser()
        add_arguments(parser, cls)
        assert _flags(parser)["warmup_epochs"] == {"--warmup-epochs"}
        assert from_args(cls, parser.parse_args(paths + ["--warmup-epochs", "3"])).warmup_epochs == 3
        assert "warmup_epochs" in config_keys(cls)
        fixed = {k: "x" for k in ("data_dir", "run_dir", "output") if k in _fields(cls)}
        assert from_mapping(cls, {"warmup_epochs": 2}, "s", **fixed).warmup_epochs == 2
        with pytest.raises(OptionError, match="s.warmup_epochs: expected an integer, got 'two'"):
            from_mapping(cls, {"warmup_epochs": "two"}, "s", **fixed)


def test_flags_build_the_same_options_as_the_config_keys():
    flags = ["--preset", "tiny", "--epochs", "3", "--learning-rate", "0.002", "--no-augment",
             "--no-tpn", "--head", "softmax", "--tpn-levels", "2,3,4", "--verbose", "0"]
    from_flags = from_args(TrainConfig, train_cli.build_parser().parse_args(
        ["--data", "d", "--run-dir", "r", *flags]))
    from_keys = from_mapping(TrainConfig, {"preset": "tiny", "epochs": 3, "learning_rate": 0.002,
                                           "augment": False, "use_tpn": False, "head": "softmax",
                                           "tpn_levels": [2, 3, 4], "verbose": 0},
                             "train", data_dir="d", run_dir="r")
    assert from_flags == from_keys
    assert from_keys.augment == AugmentConfig(crop_scale=1.0, flip=False, brightness=0.0,
                                              contrast=0.0, temporal_jitter=0)
    assert from_keys.model_settings() == {"tpn_levels": (2, 3, 4), "use_capsules": False, "use_tpn": False}


def test_augment_is_true_false_or_a_mapping_of_its_fields():
    def augment(value):
        return from_mapping(TrainConfig, {"augment": value}, "train", data_dir="d", run_dir="r").augment

    assert augment(True) == AugmentConfig()
    assert augment({"flip": False, "temporal_jitter": 0}) == AugmentConfig(flip=False, temporal_jitter=0)
    with pytest.raises(OptionError, match=r"^train.augment: unknown key 'flipp'"):
        augment({"flipp": True})
    with pytest.raises(OptionError, match=r"^train.augment: expected a mapping of AugmentConfig fields "
                                          r"or true or false, got 'yes'"):
        augment("yes")
    with pytest.raises(OptionError, match=r"^train.augment: crop_scale must be in \(0, 1\]"):
        augment({"crop_scale": 0.0})


def test_crossval_options_give_each_fold_the_shared_options():
    options = CrossvalOptions(data_dir="d", output="o", preset="tiny", epochs=3, batch_size=4,
                              flow="cascade", augment=False, seed=7, val_folds=2)
    fold = options.fold_config("o/fold00/run")
    assert (fold.data_dir, fold.run_dir, fold.resume) == ("d", "o/fold00/run", True)
    assert (fold.preset, fold.epochs, fold.batch_size, fold.flow, fold.seed, fold.verbose) == (
        "tiny", 3, 4, "cascade", 7, 2)
    assert fold.augment == AugmentConfig.none()
    assert CrossvalOptions(data_dir="d", output="o").verbose == 2  # crossval's own default


def test_model_settings_read_a_stored_run_config_as_they_read_the_options():
    # A train_config.json's mapping (lists, not tuples) gives the settings its options gave.
    config = TrainConfig(data_dir="d", run_dir="r", head="softmax", tpn_levels=(2, 3, 4),
                         model_overrides={"tpn_dropout": 0.1})
    assert model_settings(config.to_json()) == config.model_settings() == {
        "tpn_dropout": 0.1, "tpn_levels": (2, 3, 4), "use_capsules": False}


def test_cpu_replicas_do_not_combine_with_multi_worker_training():
    with pytest.raises(OptionError, match="--cpu-replicas does not combine with multi-worker"):
        TrainConfig(data_dir="d", run_dir="r", cpu_replicas=2, local_workers=2)
    TrainConfig(data_dir="d", run_dir="r", cpu_replicas=2)


def test_the_option_modules_and_the_parsers_import_no_tensorflow():
    import os
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = ("import sys\nfrom vtcaps_tf.cli import crossval, train\n"
            "train.build_parser(); crossval.build_parser()\n"
            "import vtcaps_tf.config.train_options\n"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=root, env=dict(os.environ, PYTHONPATH=root))
    assert out.stdout.split() == ["False", "False"], out.stderr[-2000:]
