"""The `vtcaps` entry point: every subcommand listed, help without TensorFlow, no start-up noise,
and one exit-status convention (0 ok, 1 failure while running, 2 bad usage or input)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from vtcaps_tf.cli import main as cli

EXPECTED = ["synth", "preprocess", "train", "evaluate", "crossval", "export", "serve", "predict",
            "stream", "profile", "pipeline"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOISE_WORDS = ("cuda", "cudnn", "cufft", "cublas", "absl::initializelog")


def _python(code: str, *args, timeout=300, env=None):
    """Run `code` in a fresh interpreter (with this checkout first on the path)."""
    full_env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    full_env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the CLI must quieten TensorFlow by itself
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=ROOT)


# Runs cli.main(argv) and reports the exit status and whether TensorFlow got imported.
RUN_MAIN = textwrap.dedent("""
    import json, sys
    from vtcaps_tf.cli import main as cli
    try:
        code = cli.main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
    sys.stdout.flush()
    print(json.dumps({"code": code, "tensorflow": "tensorflow" in sys.modules,
                      "keras": "keras" in sys.modules}))
""")


def _run_main(*argv, env=None):
    proc = _python(RUN_MAIN, *argv, env=env)
    status = json.loads(proc.stdout.strip().splitlines()[-1])
    return status, proc


def test_help_lists_every_subcommand_and_the_exit_statuses():
    status, proc = _run_main("--help")
    assert status["code"] == 0
    for name in EXPECTED:
        assert f"\n    {name}" in proc.stdout, f"{name} missing from `vtcaps --help`"
    assert "exit status:" in proc.stdout
    for code in ("0  ok", "1  failure while running", "2  bad usage or input"):
        assert code in proc.stdout


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["export", "--help"],
                                  ["profile", "--help"], ["crossval", "--help"], ["demo", "--help"],
                                  ["preprocess", "--help"]])
def test_help_does_not_import_tensorflow(argv):
    status, proc = _run_main(*argv)
    assert status["code"] == 0, proc.stderr[-2000:]
    assert not status["tensorflow"] and not status["keras"], f"`vtcaps {' '.join(argv)}` imported TF"
    assert proc.stdout.startswith("usage: vtcaps"), proc.stdout[:200]


def test_console_script_help_imports_no_tensorflow():
    # -X importtime lists every module the interpreter imported, the entry point's own included.
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c",
                           "import sys; from vtcaps_tf.cli.main import main; sys.exit(main())", "train", "--help"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")]
    assert "vtcaps_tf.cli.main" in imported and "argparse" in imported  # the listing is complete
    assert not [m for m in imported if m.split(".")[0] in ("tensorflow", "keras")]


def test_no_arguments_prints_usage_and_fails(capsys):
    assert cli.main([]) == 2
    assert "usage: vtcaps" in capsys.readouterr().out


def test_unknown_subcommand_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["frobnicate"])
    assert exc.value.code == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_unknown_top_level_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--frobnicate", "train"])
    assert exc.value.code == 2
    assert "unknown option '--frobnicate'" in capsys.readouterr().err


HELP_ALL = """
import contextlib, io, json, sys
from vtcaps_tf.cli import main as cli
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
    proc = _python(HELP_ALL, *EXPECTED)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in EXPECTED:
        code, text = results[name]
        assert code == 0, f"vtcaps {name} --help exited {code}"
        assert text.startswith(f"usage: vtcaps {name}"), text[:200]


def test_a_command_that_loads_tensorflow_prints_no_registration_noise(tmp_path):
    # export imports TensorFlow when it loads, then fails on the missing model (bad input: 2).
    status, proc = _run_main("export", "--model", str(tmp_path / "none.keras"),
                             "--base-path", str(tmp_path / "served"))
    assert status["tensorflow"], "the check needs a command that imports TensorFlow"
    assert status["code"] == 2, proc.stderr[-2000:]
    noisy = [ln for ln in proc.stderr.splitlines() if any(w in ln.lower() for w in NOISE_WORDS)]
    assert not noisy, noisy
    assert "none.keras" in proc.stderr  # the command's own message still gets through


EXIT_CODES = """
import contextlib, io, json, sys
from vtcaps_tf.cli import main as cli
out = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(argv)
        except SystemExit as exc:
            code = exc.code
    out.append([code, err.getvalue()[-300:]])
print(json.dumps(out))
"""


def test_missing_input_paths_and_bad_flags_exit_2(tmp_path):
    missing = str(tmp_path / "missing")
    cases = [
        ["train", "--data", missing, "--run-dir", str(tmp_path / "run")],
        ["crossval", "--data", missing, "--output", str(tmp_path / "cv")],
        ["evaluate", "--model", missing + ".keras", "--data", missing, "--output", str(tmp_path / "ev")],
        ["export", "--model", missing + ".keras", "--base-path", str(tmp_path / "served")],
        # a Beam flag passes the up-front check; the missing input is what fails
        ["preprocess", "--source", "folder", "--input", missing, "--output", str(tmp_path / "pp"),
         "--direct_num_workers", "2"],
        ["preprocess", "--source", "no-such-source", "--input", missing, "--output", str(tmp_path / "pp")],
        ["preprocess", "--source", "folder", "--input", missing, "--output", str(tmp_path / "pp"),
         "--clips-per-record", "0"],
        ["predict", missing + ".mp4", "--saved-model", missing],
        ["pipeline", "run", "--config", missing + ".json"],
        ["train", "--data", missing, "--run-dir", str(tmp_path / "run"), "--no-such-flag"],
        ["export", "--no-such-flag"],
        ["evaluate", "--model", "m", "--data", "d", "--output", "o", "--batch-size", "many"],
        ["profile", "--preset", "no-such-preset"],
        ["synth", "--output", str(tmp_path / "s"), "--per-class", "0"],
    ]
    proc = _python(EXIT_CODES, json.dumps(cases))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for argv, (code, err) in zip(cases, json.loads(proc.stdout.strip().splitlines()[-1])):
        assert code == 2, f"vtcaps {' '.join(argv)} exited {code}: {err}"
        assert err.strip(), f"vtcaps {' '.join(argv)} gave no message"
        if "--clips-per-record" in argv:
            assert "--clips-per-record: must be at least 1" in err, err
        if "--direct_num_workers" in argv:
            assert "unrecognized arguments" not in err and missing in err, err


def _fake_command(tmp_path, monkeypatch, body: str):
    """A subcommand `fake` whose cli_main runs `body` (its module in tmp_path)."""
    module = f"fake_vtcaps_command_{abs(hash(body))}"  # one per body: imported modules are cached
    (tmp_path / f"{module}.py").write_text(
        "from vtcaps_tf.errors import UsageError\n\ndef cli_main(argv):\n    " + body + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.SUBCOMMANDS, "fake", cli.Command(module, "test", None))


def test_usage_error_exits_2(tmp_path, monkeypatch, capsys):
    _fake_command(tmp_path, monkeypatch, "raise UsageError('no such clip folder')")
    assert cli.main(["fake"]) == 2
    assert capsys.readouterr().err == "vtcaps fake: error: no such clip folder\n"


def test_other_exceptions_exit_1_with_one_line_and_a_traceback_only_when_verbose(tmp_path, monkeypatch,
                                                                               capsys):
    _fake_command(tmp_path, monkeypatch, "raise RuntimeError('disk full')")
    assert cli.main(["fake"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "RuntimeError: disk full" in err
    assert "Traceback" not in err
    assert cli.main(["--verbose", "fake"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "disk full" in err


def test_a_command_status_passes_through(tmp_path, monkeypatch):
    _fake_command(tmp_path, monkeypatch, "return 1 if argv else None")
    assert cli.main(["fake"]) == 0
    assert cli.main(["fake", "x"]) == 1


def test_verbose_leaves_the_tensorflow_log_level_alone():
    code = ("import os, sys\nfrom vtcaps_tf.cli import main as cli\n"
            "try:\n    cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'))")
    assert _python(code, "--verbose", "pipeline", "--help").stdout.split()[-1] == "None"
    assert _python(code, "pipeline", "--help").stdout.split()[-1] == "3"
    assert _python(code, "pipeline", "--help", env={"TF_CPP_MIN_LOG_LEVEL": "1"}).stdout.split()[-1] == "1"


def test_package_is_light_and_models_import_registers_the_custom_objects(tmp_path):
    path = str(tmp_path / "fusion.keras")
    save = textwrap.dedent(f"""
        import keras
        from vtcaps_tf.layers import FastNormalizedFusion
        inputs = [keras.Input((3,)), keras.Input((3,))]
        keras.Model(inputs, FastNormalizedFusion()(inputs)).save({path!r})
    """)
    assert _python(save).returncode == 0
    load = textwrap.dedent(f"""
        import json, sys
        import vtcaps_tf
        light = "tensorflow" not in sys.modules and "keras" not in sys.modules
        import vtcaps_tf.models
        import keras
        model = keras.saving.load_model({path!r})
        print(json.dumps([light, type(model.layers[-1]).__name__,
                          vtcaps_tf.layers.FastNormalizedFusion.__name__]))
    """)
    proc = _python(load)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [True, "FastNormalizedFusion",
                                                                "FastNormalizedFusion"]
