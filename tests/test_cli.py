"""The `vtcaps` entry point: every subcommand listed, clear errors for unknown ones."""

import subprocess
import sys

import pytest

from vtcaps_tf import cli

EXPECTED = ["synth", "preprocess", "train", "evaluate", "export", "serve", "predict", "profile", "pipeline"]


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "vtcaps_tf.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for name in EXPECTED:
        assert f"\n    {name}" in out, f"{name} missing from `vtcaps --help`"


def test_no_arguments_prints_usage_and_fails(capsys):
    assert cli.main([]) == 2
    assert "usage: vtcaps" in capsys.readouterr().out


def test_unknown_subcommand_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["frobnicate"])
    assert exc.value.code == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


@pytest.mark.parametrize("name", EXPECTED)
def test_each_subcommand_has_help(name):
    proc = subprocess.run([sys.executable, "-m", "vtcaps_tf.cli", name, "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"vtcaps {name}" in proc.stdout or "usage:" in proc.stdout
