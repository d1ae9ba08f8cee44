"""The `vtcaps` entry point: every subcommand listed, clear errors for unknown ones."""

import json
import subprocess
import sys

import pytest

from vtcaps_tf import cli

EXPECTED = ["synth", "preprocess", "train", "evaluate", "export", "serve", "predict", "stream", "profile",
            "pipeline"]


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


HELP_ALL = """
import contextlib, io, json, sys
from vtcaps_tf import cli
out = {}
for name in sys.argv[1:]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            code = cli.main([name, "--help"])
        except SystemExit as exc:
            code = exc.code
    out[name] = [code, buf.getvalue()]
print(json.dumps(out))
"""


def test_each_subcommand_has_help():
    # One interpreter for all nine: each subcommand module imports TensorFlow.
    proc = subprocess.run([sys.executable, "-c", HELP_ALL, *EXPECTED], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in EXPECTED:
        code, text = results[name]
        assert code == 0, f"vtcaps {name} --help exited {code}"
        assert text.startswith(f"usage: vtcaps {name}"), text[:200]
