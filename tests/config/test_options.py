"""vtcaps_tf.config.options: flags and config keys derived from one dataclass of options."""

import argparse
import dataclasses

import pytest

from vtcaps_tf.config.options import (OptionError, add_arguments, check, config_keys, flag_names,
                                      from_args, from_mapping, option, to_mapping)
from vtcaps_tf.errors import UsageError


@dataclasses.dataclass
class Inner:
    scale: float = option(0.5, help="a scale", minimum=0.0)


@dataclasses.dataclass
class Sample:
    data: str = option(help="input directory")
    epochs: int = option(3, help="epochs", minimum=1)
    rate: float = option(1e-3, help="learning rate")
    mode: str = option("a", help="the mode", choices=("a", "b"))
    flag: bool = option(False, help="a switch")
    keep: bool = option(True, help="an on/off switch")
    levels: tuple[int, ...] = option((3, 4), help="levels")
    steps: int | None = option(None, help="steps")
    verbose: int | str = option("auto", help="verbosity")
    inner: Inner = option(default_factory=Inner, help="nested", cli=False)
    hidden: int = option(0, help="a flag only", config=False)
    internal: int = 7  # not an option: neither a flag nor a key


def _parser():
    p = argparse.ArgumentParser()
    add_arguments(p, Sample)
    return p


def test_every_option_field_is_a_flag_and_a_key_and_nothing_else():
    assert flag_names(Sample) == {"data": "--data", "epochs": "--epochs", "rate": "--rate",
                                  "mode": "--mode", "flag": "--flag", "keep": "--keep",
                                  "levels": "--levels", "steps": "--steps", "verbose": "--verbose",
                                  "hidden": "--hidden"}
    assert config_keys(Sample) == ("data", "epochs", "rate", "mode", "flag", "keep", "levels",
                                   "steps", "verbose", "inner")


def test_flags_parse_into_the_dataclass_with_its_defaults():
    args = _parser().parse_args(["--data", "d", "--levels", "2,3,4", "--no-keep", "--flag",
                                 "--verbose", "2", "--steps", "5"])
    opts = from_args(Sample, args)
    assert opts == Sample(data="d", levels=(2, 3, 4), keep=False, flag=True, verbose=2, steps=5)
    assert from_args(Sample, _parser().parse_args(["--data", "d"])) == Sample(data="d")


def test_a_required_option_without_a_flag_value_is_a_usage_error():
    with pytest.raises(SystemExit) as err:
        _parser().parse_args([])
    assert err.value.code == 2


def test_adding_a_field_adds_its_flag_and_its_key():
    @dataclasses.dataclass
    class More(Sample):
        extra_thing: float = option(2.0, help="one more")

    p = argparse.ArgumentParser()
    add_arguments(p, More)
    assert from_args(More, p.parse_args(["--data", "x", "--extra-thing", "3"])).extra_thing == 3.0
    assert "extra_thing" in config_keys(More)
    assert from_mapping(More, {"data": "x", "extra_thing": 4}, "more").extra_thing == 4.0


@pytest.mark.parametrize("mapping, message", [
    ({"data": "x", "epochs": "ten"}, "train.epochs: expected an integer, got 'ten'"),
    ({"data": "x", "epochs": True}, "train.epochs: expected an integer, got True"),
    ({"data": "x", "rate": "fast"}, "train.rate: expected a number, got 'fast'"),
    ({"data": "x", "flag": "yes"}, "train.flag: expected true or false, got 'yes'"),
    ({"data": "x", "levels": [3, "4"]}, "train.levels[1]: expected an integer, got '4'"),
    ({"data": "x", "mode": "c"}, "train.mode: 'c' is not one of a, b"),
    ({"data": "x", "epochs": 0}, "train.epochs: must be at least 1, got 0"),
    ({"data": "x", "inner": {"scale": -1}}, "train.inner.scale: must be at least 0, got -1"),
    ({"data": "x", "inner": {"scal": 1}}, "train.inner: unknown key 'scal'; known: scale"),
    ({"data": "x", "epochz": 3}, "train: unknown key 'epochz'"),
    ({"data": "x", "hidden": 3}, "train: unknown key 'hidden'"),
    ({"epochs": 3}, "train.data: required, not set"),
])
def test_a_config_with_a_wrong_type_or_key_is_refused_naming_the_key(mapping, message):
    with pytest.raises(OptionError) as err:
        from_mapping(Sample, mapping, "train")
    assert str(err.value).startswith(message)
    assert isinstance(err.value, UsageError)  # exit status 2


def test_a_config_mapping_builds_the_options_and_round_trips():
    opts = from_mapping(Sample, {"data": "x", "epochs": 5, "rate": 1, "levels": [2, 3],
                                 "steps": None, "verbose": 1, "inner": {"scale": 0.25}}, "train")
    assert opts == Sample(data="x", epochs=5, rate=1.0, levels=(2, 3), verbose=1, inner=Inner(0.25))
    assert isinstance(opts.rate, float)
    assert to_mapping(opts)["levels"] == [2, 3] and to_mapping(opts)["inner"] == {"scale": 0.25}
    assert from_mapping(Sample, to_mapping(opts), "train") == opts


def test_flag_values_are_checked_by_the_same_rules_named_by_their_flag():
    with pytest.raises(OptionError, match="--epochs: must be at least 1, got 0"):
        from_args(Sample, _parser().parse_args(["--data", "d", "--epochs", "0"]))


def test_check_refuses_an_instance_built_in_python_with_a_wrong_type():
    check(Sample(data="d"), "train")
    with pytest.raises(OptionError, match="train.epochs: expected an integer"):
        check(Sample(data="d", epochs="3"), "train")


@dataclasses.dataclass
class Switches:
    attention: bool | None = option(None, help="on, off, or the preset's value", group="model")
    tpn: bool = option(True, flag="--no-tpn", help="turn the pyramid off", group="model")
    augment: Inner | bool = option(True, flag="--no-augment", help="augment, or not")


def _switches():
    p = argparse.ArgumentParser()
    add_arguments(p, Switches)
    return p


def test_a_three_state_switch_and_a_switch_that_turns_an_option_off():
    assert from_args(Switches, _switches().parse_args([])) == Switches(None, True, True)
    assert from_args(Switches, _switches().parse_args(["--attention"])).attention is True
    opts = from_args(Switches, _switches().parse_args(["--no-attention", "--no-tpn", "--no-augment"]))
    assert opts == Switches(False, False, False)
    for flag in ("--tpn", "--augment"):  # only the switch that turns the option off exists
        with pytest.raises(SystemExit):
            _switches().parse_args([flag])


def test_a_field_group_lists_its_flags_under_that_title():
    p = _switches()
    titled = {g.title: [a.option_strings[0] for a in g._group_actions] for g in p._action_groups}
    assert titled["model"] == ["--attention", "--no-tpn"]
    assert "--no-augment" in [a for g in p._action_groups if g.title != "model"
                              for action in g._group_actions for a in action.option_strings]


def test_a_mapping_for_a_nested_option_in_a_union_keeps_its_own_error():
    assert from_mapping(Switches, {"augment": False}, "s").augment is False
    assert from_mapping(Switches, {"augment": {"scale": 0.25}}, "s").augment == Inner(0.25)
    with pytest.raises(OptionError, match=r"^s.augment: unknown key 'scal'; known: scale"):
        from_mapping(Switches, {"augment": {"scal": 1}}, "s")
    with pytest.raises(OptionError, match=r"^s.augment: expected a mapping of Inner fields or true or "
                                          r"false, got 'yes'"):
        from_mapping(Switches, {"augment": "yes"}, "s")


def test_required_flags_come_first_then_the_ungrouped_then_the_groups():
    @dataclasses.dataclass(kw_only=True)
    class Ordered(Switches):
        path: str = option(help="required")
        rate: float = option(0.1, help="a number")

    p = argparse.ArgumentParser()
    add_arguments(p, Ordered)
    flags = [a.option_strings[0] for a in p._actions if a.option_strings and a.dest != "help"]
    assert flags == ["--path", "--no-augment", "--rate", "--attention", "--no-tpn"]
