"""`vtcaps preprocess` and `vtcaps evaluate`: every flag is a field of the command's options
dataclass, with the defaults and meanings the commands have always had, and values the options
refuse are usage errors naming the flag."""

import argparse
import dataclasses

import pytest

from vtcaps_tf.cli import evaluate as evaluate_cli
from vtcaps_tf.cli import preprocess as preprocess_cli
from vtcaps_tf.config.evaluate import EvaluateOptions
from vtcaps_tf.config.options import OptionError, config_keys, from_args, option
from vtcaps_tf.config.preprocess import PreprocessOptions, resolved
from vtcaps_tf.errors import UsageError


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.dest != "help"}


@pytest.mark.parametrize("build, cls", [(preprocess_cli.build_parser, PreprocessOptions),
                                        (evaluate_cli.build_parser, EvaluateOptions)])
def test_every_flag_is_a_field_and_every_field_a_flag(build, cls):
    flags = _flags(build())
    assert list(flags) == [f.name for f in dataclasses.fields(cls)]
    for field in dataclasses.fields(cls):
        action = flags[field.name]
        assert action.option_strings == ["--" + field.name.replace("_", "-")]
        if field.default is not dataclasses.MISSING and not action.required:
            assert action.default == field.default, field.name


def test_preprocess_flags_keep_their_defaults_and_requirements():
    # The flags of `vtcaps preprocess` as the command has always had them.
    flags = _flags(preprocess_cli.build_parser())
    assert [n for n, a in flags.items() if a.required] == ["source", "input", "output"]
    defaults = {n: a.default for n, a in flags.items() if not a.required}
    assert defaults == {
        "preset": "small", "clip_frames": None, "long_frames": None, "image_size": None,
        "split_ratios": (0.7, 0.15, 0.15), "seed": 42, "folds": 0, "short_policy": None,
        "clip_labels": None, "jpeg_quality": 90, "clips_per_record": 8, "max_frames": 18000,
        "no_progress": False, "stall_timeout": 900.0, "startup_timeout": 120.0}
    assert flags["source"].choices == ("folder", "ckplus", "afew", "synthetic")
    assert flags["short_policy"].choices == ("resample", "pad_first", "loop", "drop")
    assert flags["clip_labels"].choices == ("all", "near_peak")
    # The config keys are the same fields, less the output (the pipeline decides it).
    assert config_keys(PreprocessOptions) == tuple(n for n in flags if n != "output")


def test_preprocess_command_line_to_options_and_beam_flags():
    options, beam_args = preprocess_cli.parse([
        "--source", "ckplus", "--input", "in", "--output", "out", "--preset", "tiny",
        "--clip-frames", "4", "--long-frames", "8", "--image-size", "32", "--split-ratios", "2,1,1",
        "--seed", "3", "--folds", "5", "--short-policy", "loop", "--clip-labels", "all",
        "--jpeg-quality", "80", "--clips-per-record", "2", "--max-frames", "100", "--no-progress",
        "--stall-timeout", "5", "--direct_num_workers", "2", "--runner", "DirectRunner"])
    assert options == PreprocessOptions(
        source="ckplus", input="in", output="out", preset="tiny", clip_frames=4, long_frames=8,
        image_size=32, split_ratios=(2.0, 1.0, 1.0), seed=3, folds=5, short_policy="loop",
        clip_labels="all", jpeg_quality=80, clips_per_record=2, max_frames=100, no_progress=True,
        stall_timeout=5.0)
    assert beam_args == ["--direct_num_workers", "2", "--runner", "DirectRunner"]
    options, _ = preprocess_cli.parse(["--source", "folder", "--input", "i", "--output", "o",
                                       "--split-ratios", "[0.6, 0.2, 0.2]"])
    assert options.split_ratios == (0.6, 0.2, 0.2)


def test_resolved_fills_in_the_preset_and_the_source():
    # The tiny preset: 8-frame clips, a 16-frame window, 32 px crops (vtcaps_tf/config/presets.py).
    options = resolved(PreprocessOptions(source="ckplus", input="i", output="o", preset="tiny",
                                         split_ratios=(2, 1, 1)))
    assert (options.clip_frames, options.long_frames, options.image_size) == (8, 16, 32)
    assert (options.short_policy, options.clip_labels) == ("pad_first", "near_peak")  # CK+'s
    assert options.split_ratios == (0.5, 0.25, 0.25)
    # A clip longer than the preset's window stretches the window to it; given values stay.
    options = resolved(PreprocessOptions(source="folder", input="i", output="o", preset="tiny",
                                         clip_frames=20, short_policy="loop"))
    assert (options.clip_frames, options.long_frames) == (20, 20)
    assert (options.short_policy, options.clip_labels) == ("loop", "all")
    assert resolved(options) == options
    with pytest.raises(OptionError, match="need clip_frames <= long_frames, got 8, 4"):
        resolved(PreprocessOptions(source="folder", input="i", output="o", preset="tiny", long_frames=4))


@pytest.mark.parametrize("extra, message", [
    (["--split-ratios", "1,2"], "need 3 split ratios"),
    (["--split-ratios", "0,1,1"], "train ratio"),
    (["--folds", "1"], "folds must be at least 2"),
    (["--jpeg-quality", "101"], "jpeg_quality must be in 1..100"),
    (["--jpeg-quality", "0"], "--jpeg-quality: must be at least 1, got 0"),
    (["--clips-per-record", "0"], "--clips-per-record: must be at least 1, got 0"),
    (["--image-size", "4"], "--image-size: must be at least 8, got 4"),
    (["--clip-frames", "8", "--long-frames", "4"], "need clip_frames <= long_frames, got 8, 4"),
])
def test_preprocess_values_the_options_refuse_are_usage_errors(extra, message):
    with pytest.raises(UsageError, match=message):
        preprocess_cli.parse(["--source", "folder", "--input", "i", "--output", "o", *extra])


def test_a_field_added_to_the_options_is_a_flag_and_a_key(monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class More(PreprocessOptions):
        face_margin: float = option(0.2, help="one more")

    monkeypatch.setattr(preprocess_cli, "PreprocessOptions", More)
    options, _ = preprocess_cli.parse(["--source", "folder", "--input", "i", "--output", "o",
                                       "--face-margin", "0.5"])
    assert options.face_margin == 0.5
    assert "face_margin" in config_keys(More)


def test_evaluate_command_line_to_options():
    args = evaluate_cli.build_parser().parse_args(
        ["--model", "m.keras", "--data", "d", "--output", "o", "--split", "fold03", "--batch-size", "4"])
    assert from_args(EvaluateOptions, args) == EvaluateOptions(
        model="m.keras", data="d", output="o", split="fold03", batch_size=4)
    defaults = from_args(EvaluateOptions, evaluate_cli.build_parser().parse_args(
        ["--model", "m", "--data", "d", "--output", "o"]))
    assert (defaults.split, defaults.batch_size) == ("test", 16)
    with pytest.raises(UsageError, match="--batch-size: must be at least 1, got 0"):
        evaluate_cli.main(["--model", "m", "--data", "d", "--output", "o", "--batch-size", "0"])


def test_options_built_in_python_are_checked_when_resolved():
    with pytest.raises(UsageError, match="preprocess.jpeg_quality: must be at least 1, got 0"):
        resolved(PreprocessOptions(source="folder", input="i", output="o", jpeg_quality=0))
    with pytest.raises(UsageError, match="preprocess.seed: expected an integer, got '1'"):
        resolved(PreprocessOptions(source="folder", input="i", output="o", seed="1"))
