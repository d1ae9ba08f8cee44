"""The `vtcaps` entry point: every command of the dispatcher's table, its help without TensorFlow,
no start-up noise, and one exit-status table (vtcaps_tf.errors), held command by command."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import types

import pytest

from vtcaps_tf.cli import main as cli
from vtcaps_tf.errors import EXIT_STATUSES, UsageError

# The commands, in the order of the dispatcher's table.
EXPECTED = ["synth", "preprocess", "train", "evaluate", "check-data", "crossval", "export", "serve",
            "predict", "stream", "profile", "pipeline", "demo"]
# One flag of each command, as its documentation names it: tells the command's own help from another's.
OWN_FLAG = {"synth": "--per-class", "preprocess": "--clips-per-record", "train": "--run-dir",
            "evaluate": "--split", "check-data": "DIR", "crossval": "--output", "export": "--base-path",
            "serve": "--model-base-path", "predict": "--saved-model", "stream": "--realtime",
            "profile": "--json", "pipeline": "run", "demo": "--force"}
HEAVY = ("tensorflow", "keras", "apache_beam", "mediapipe", "cv2")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOISE_WORDS = ("cuda", "cudnn", "cufft", "cublas", "absl::initializelog")


def _python(code: str, *args, timeout=300, env=None, **kwargs):
    """Run `code` in a fresh interpreter (with this checkout first on the path)."""
    full_env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    full_env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the CLI must quieten TensorFlow by itself
    full_env.update(env or {})
    kwargs.setdefault("capture_output", True)
    return subprocess.run([sys.executable, "-c", code, *args], text=True, timeout=timeout,
                          env=full_env, cwd=ROOT, **kwargs)


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


def test_the_table_holds_the_thirteen_commands_each_in_its_own_module():
    assert list(cli.COMMANDS) == EXPECTED
    for name in EXPECTED:
        module = name.replace("-", "_")  # a module name cannot hold a hyphen
        assert cli.command_module(name) == f"vtcaps_tf.cli.{module}"
        assert os.path.isfile(os.path.join(ROOT, "vtcaps_tf", "cli", f"{module}.py"))


def test_help_lists_every_command_and_the_exit_statuses():
    status, proc = _run_main("--help")
    assert status["code"] == 0
    for name in EXPECTED:
        assert f"\n    {name}" in proc.stdout, f"{name} missing from `vtcaps --help`"
    assert "exit status:" in proc.stdout
    words = " ".join(proc.stdout.split())
    for code, text in [(0, "ok"), (1, "failure while running"), (2, "bad usage or input"),
                       (130, "interrupted (Ctrl-C)")]:
        assert f"{code} {text}" in words
    for code, text in EXIT_STATUSES:  # the whole table, as vtcaps_tf.errors defines it
        assert f"{code} {text}" in words


# `vtcaps NAME --help` in this interpreter; prints the status, the heavy modules imported by then,
# the help text, and the flags, positionals and sub-commands of the command's own parser.
HELP_ONE = textwrap.dedent("""
    import contextlib, importlib, io, json, sys
    from vtcaps_tf.cli import main as cli
    name = sys.argv[1]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = cli.main([name, "--help"])
        except SystemExit as exc:
            code = exc.code
    heavy = [m for m in sys.argv[2:] if m in sys.modules]
    parser = importlib.import_module(cli.command_module(name)).build_parser()
    names = []
    for action in parser._actions:
        if action.option_strings:
            names += action.option_strings
        elif action.choices and not isinstance(action.choices, (list, tuple)):  # sub-commands
            names += list(action.choices)
        else:
            names.append(action.metavar or action.dest)
    print(json.dumps({"code": code, "heavy": heavy, "text": out.getvalue(), "names": names}))
""")


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_each_command_help_lists_its_flags_without_heavy_imports(name):
    start = time.perf_counter()
    proc = _python(HELP_ONE, name, *HEAVY)
    seconds = time.perf_counter() - start
    print(f"vtcaps {name} --help: {seconds:.2f} s in a fresh interpreter")  # information only
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["code"] == 0
    assert result["heavy"] == [], f"`vtcaps {name} --help` imported {result['heavy']}"
    text = result["text"]
    assert text.startswith(f"usage: vtcaps {name}"), text[:200]
    missing = [n for n in result["names"] if n not in text]
    assert not missing, f"`vtcaps {name} --help` does not show {missing}"
    assert OWN_FLAG[name] in text


def test_console_script_help_imports_no_tensorflow():
    # -X importtime lists every module the interpreter imported, the entry point's own included.
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c",
                           "import sys; from vtcaps_tf.cli.main import main; sys.exit(main())", "predict", "--help"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")]
    # The listing is complete: the command module's own imports are in it (importlib's import of
    # the module itself is not listed).
    assert {"argparse", "vtcaps_tf.cli.main", "vtcaps_tf.apps.options"} <= set(imported)
    assert not [m for m in imported if m.split(".")[0] in HEAVY]


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


def test_a_command_that_loads_tensorflow_prints_no_registration_noise(tmp_path):
    # export imports TensorFlow when it runs, then fails on the missing model (bad input: 2).
    status, proc = _run_main("export", "--model", str(tmp_path / "none.keras"),
                             "--base-path", str(tmp_path / "served"))
    assert status["tensorflow"], "the check needs a command that imports TensorFlow"
    assert status["code"] == 2, proc.stderr[-2000:]
    noisy = [ln for ln in proc.stderr.splitlines() if any(w in ln.lower() for w in NOISE_WORDS)]
    assert not noisy, noisy
    assert "none.keras" in proc.stderr  # the command's own message still gets through


# Runs cli.main on each argv of a JSON list; prints [[status, stderr], ...].
EXIT_CODES = textwrap.dedent("""
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
        out.append([code, err.getvalue()])
    print(json.dumps(out))
""")


def _statuses(cases: list[list[str]]) -> list[tuple[int, str]]:
    proc = _python(EXIT_CODES, json.dumps(cases))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [tuple(r) for r in json.loads(proc.stdout.strip().splitlines()[-1])]


def _regular_file(root) -> str:
    """A regular file: a folder asked for below it cannot be made (NotADirectoryError)."""
    path = root / "a_file"
    path.write_text("not a folder")
    return str(path)


def _closed_port() -> int:
    """A localhost port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _usage_cases(root) -> dict[str, tuple[list[str], str]]:
    """Per command, a run with a missing input (path, model, config or required flag) and the
    text its message must name."""
    missing = str(root / "missing")
    return {
        "synth": (["synth", "--output", str(root / "s"), "--face", missing + ".jpg"], missing + ".jpg"),
        "preprocess": (["preprocess", "--source", "folder", "--input", missing, "--output",
                        str(root / "pp")], missing),
        "train": (["train", "--data", missing, "--run-dir", str(root / "run")], missing),
        "evaluate": (["evaluate", "--model", missing + ".keras", "--data", str(root),
                      "--output", str(root / "ev")], missing + ".keras"),
        "check-data": (["check-data", missing], missing),
        "crossval": (["crossval", "--data", missing, "--output", str(root / "cv")], missing),
        "export": (["export", "--model", missing + ".keras", "--base-path", str(root / "served")],
                   missing + ".keras"),
        "serve": (["serve", "--model-config-file", missing + ".config"], missing + ".config"),
        "predict": (["predict", missing + ".mp4", "--saved-model", missing], missing + ".mp4"),
        "stream": (["stream", missing + ".mp4", "--saved-model", missing], missing + ".mp4"),
        "profile": (["profile", "--preset", "no-such-preset"], "no-such-preset"),
        "pipeline": (["pipeline", "run", "--config", missing + ".json"], missing + ".json"),
        "demo": (["demo", "--config", missing + ".json", "--output", str(root / "demo")],
                 missing + ".json"),
    }


def _bad_flag_cases(root) -> list[tuple[list[str], str]]:
    """Runs with a malformed flag or value, and a text their message must hold."""
    missing = str(root / "missing")
    video = root / "a.avi"
    video.write_bytes(b"a video")  # never read: the server address is refused first
    return [
        # a Beam flag passes the up-front check; the missing input is what fails
        (["preprocess", "--source", "folder", "--input", missing, "--output", str(root / "pp"),
          "--direct_num_workers", "2"], missing),
        (["preprocess", "--source", "no-such-source", "--input", missing, "--output", str(root / "pp")],
         "invalid choice: 'no-such-source'"),
        (["preprocess", "--source", "folder", "--input", missing, "--output", str(root / "pp"),
          "--clips-per-record", "0"], "--clips-per-record: must be at least 1"),
        (["train", "--data", missing, "--run-dir", str(root / "run"), "--no-such-flag"], "--no-such-flag"),
        (["export", "--model", "m", "--base-path", "b", "--no-such-flag"],
         "unrecognized arguments: --no-such-flag"),
        (["evaluate", "--model", "m", "--data", "d", "--output", "o", "--batch-size", "many"], "'many'"),
        (["synth", "--output", str(root / "s"), "--per-class", "0"], "--per-class"),
        (["predict", str(video), "--server", "ftp://127.0.0.1:9"], "only http:// servers"),
        (["predict", str(video), "--server", "http://127.0.0.1:port"], "no valid port"),
        (["predict", missing + ".mp4", "--saved-model", missing, "--batch-size", "0"],
         "batch size must be at least 1"),
        (["stream", missing + ".mp4", "--saved-model", missing, "--every", "0"], "every must be at least 1"),
        (["serve", "--model-base-path", missing, "--grpc_channel_arguments", "grpc.keepalive_time_ms"],
         "is not key=value"),
        (["serve", "--model-base-path", missing, "--model-config-file-poll-wait-seconds", "5"],
         "needs a model_config_file"),
        (["serve", "--model-base-path", missing, "--model-config-file", missing + ".config"],
         "exactly one of"),
        (["pipeline", "run"], "the following arguments are required: --config"),
    ]


def _with_a_missing_shard(root) -> str:
    from tests.data.fixtures import write_dataset

    data = write_dataset(str(root / "copied"), counts={"train": 4}, shards=2)
    os.remove(os.path.join(data, "train-00001-of-00002.tfrecord.gz"))
    return data


def _failure_cases(root, rest_port: int) -> dict[str, tuple[list[str], str]]:
    """Per command that needs no trained model, a run whose input is acceptable but whose work
    fails (a folder that cannot be made, a port already taken, a server that does not answer),
    and a text of its message."""
    from tests.data.fixtures import write_dataset

    blocked = _regular_file(root)
    data = write_dataset(str(root / "data"))
    folds = write_dataset(str(root / "folds"), counts={"fold00": 6, "fold01": 6})
    with open(os.path.join(folds, "metadata.json")) as f:
        meta = json.load(f)
    with open(os.path.join(folds, "metadata.json"), "w") as f:
        json.dump(dict(meta, folds=2), f)  # as `vtcaps preprocess --folds 2` writes it
    videos = root / "videos" / "happy"
    videos.mkdir(parents=True)
    (videos / "a.avi").write_bytes(b"a video")
    video = str(videos / "a.avi")  # never read: the model is asked for first
    chain = root / "chain.json"
    chain.write_text(json.dumps({"pipeline_root": os.path.join(blocked, "root")}))
    (root / "served").mkdir()  # a base path with no version yet: serve waits for one
    closed = f"http://127.0.0.1:{_closed_port()}"
    no_folder = "Not a directory"
    return {
        "synth": (["synth", "--output", os.path.join(blocked, "synth")], no_folder),
        "preprocess": (["preprocess", "--source", "folder", "--input", str(root / "videos"),
                        "--output", os.path.join(blocked, "pp")], "not a directory"),
        "train": (["train", "--data", data, "--run-dir", os.path.join(blocked, "run"),
                   "--preset", "tiny", "--epochs", "1"], no_folder),
        "check-data": (["check-data", _with_a_missing_shard(root)], "problem(s) in"),
        "crossval": (["crossval", "--data", folds, "--output", os.path.join(blocked, "cv"),
                      "--preset", "tiny", "--epochs", "1"], no_folder),
        "serve": (["serve", "--model-base-path", str(root / "served"), "--rest-port", str(rest_port),
                   "--grpc-port", "-1"], f"cannot bind the REST API to 127.0.0.1:{rest_port}"),
        "predict": (["predict", video, "--server", closed], f"cannot use model 'vtcaps' at {closed}"),
        "stream": (["stream", video, "--server", closed], f"cannot use model 'vtcaps' at {closed}"),
        "pipeline": (["pipeline", "run", "--config", str(chain)], no_folder),
        "demo": (["demo", "--output", os.path.join(blocked, "demo")], no_folder),
    }


# Commands whose failing run needs a trained model: test_a_failing_run_exits_1_with_a_model.
NEEDS_A_MODEL = {"evaluate", "export", "profile"}


@pytest.fixture(scope="module")
def exit_statuses(tmp_path_factory):
    """{group: [(argv, text, status, stderr)]} of the usage, bad-flag and failure cases, all run
    in one fresh interpreter (TensorFlow and Beam load once)."""
    root = tmp_path_factory.mktemp("exit_statuses")
    for group in ("usage", "bad_flags", "failure"):
        (root / group).mkdir()
    groups = {"usage": list(_usage_cases(root / "usage").values()),
              "bad_flags": _bad_flag_cases(root / "bad_flags")}
    with socket.socket() as taken:  # serve's REST port, held while the cases run
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        groups["failure"] = list(_failure_cases(root / "failure", taken.getsockname()[1]).values())
        cases = [argv for group in groups.values() for argv, _ in group]
        results = iter(_statuses(cases))
    return {name: [(argv, text, *next(results)) for argv, text in group]
            for name, group in groups.items()}


def test_every_command_exits_2_naming_a_missing_input_in_one_line(exit_statuses):
    # a command added to the table needs its case in _usage_cases
    assert [argv[0] for argv, *_ in exit_statuses["usage"]] == list(cli.COMMANDS)
    for argv, needle, code, err in exit_statuses["usage"]:
        assert code == 2, f"vtcaps {' '.join(argv)} exited {code}: {err[-500:]}"
        naming = [line for line in err.splitlines() if needle in line]
        assert len(naming) == 1 and naming[0] == err.splitlines()[-1], err
        assert naming[0].startswith(f"vtcaps {argv[0]}:"), err


def test_bad_flags_and_values_exit_2(exit_statuses):
    for argv, text, code, err in exit_statuses["bad_flags"]:
        assert code == 2, f"vtcaps {' '.join(argv)} exited {code}: {err[-500:]}"
        assert text in err.splitlines()[-1], err
        if "--direct_num_workers" in argv:
            assert "unrecognized arguments" not in err, err


def test_a_failing_run_exits_1(exit_statuses):
    # a command added to the table needs its case in _failure_cases (or in the test with a model)
    assert {argv[0] for argv, *_ in exit_statuses["failure"]} | NEEDS_A_MODEL == set(cli.COMMANDS)
    for argv, text, code, err in exit_statuses["failure"]:
        assert code == 1, f"vtcaps {' '.join(argv)} exited {code}: {err[-800:]}"
        last = err.splitlines()[-1]
        assert last.startswith(f"vtcaps {argv[0]}: error: ") and text in last, err[-800:]


@pytest.mark.slow
def test_a_failing_run_exits_1_with_a_model(tmp_path):
    """evaluate and export of a model file of `vtcaps train`'s kind (an untrained `tiny`: what
    counts is that it loads) to a folder that cannot be made, and profile's result to an output
    that cannot be written (a full disk, /dev/full)."""
    from tests.data.fixtures import write_dataset
    from vtcaps_tf.models import build_model

    blocked = _regular_file(tmp_path)
    data = write_dataset(str(tmp_path / "data"), counts={"test": 3})
    model_path = str(tmp_path / "model.keras")
    build_model("tiny", class_names=["class_0", "class_1", "class_2"], num_classes=3).save(model_path)
    cases = {
        "evaluate": ["evaluate", "--model", model_path, "--data", data, "--output",
                     os.path.join(blocked, "eval")],
        "export": ["export", "--model", model_path, "--base-path", os.path.join(blocked, "served")],
    }
    assert set(cases) | {"profile"} == NEEDS_A_MODEL
    for (name, argv), (code, err) in zip(cases.items(), _statuses(list(cases.values()))):
        assert code == 1, f"vtcaps {' '.join(argv)} exited {code}: {err[-800:]}"
        assert err.splitlines()[-1].startswith(f"vtcaps {name}: error: NotADirectoryError"), err[-800:]

    # The process's own status: its exit flush must not fail again (Python would exit 120).
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "vtcaps_tf.cli.main", "profile", "--preset", "tiny",
                               "--json"], stdout=full, stderr=subprocess.PIPE, text=True, timeout=600,
                              cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.splitlines()[-1].startswith(
        "vtcaps profile: error: OSError: [Errno 28] No space left on device"), proc.stderr[-2000:]


def _fake_command(monkeypatch, body: str, name: str = "fake"):
    """A command `name` whose module (vtcaps_tf.cli.<name>, made here) runs `body` as its main;
    its parser takes any positional arguments and no flags."""
    import argparse

    def build_parser():
        p = argparse.ArgumentParser(prog=f"vtcaps {name}")
        p.add_argument("rest", nargs="*")
        return p

    namespace = {"UsageError": UsageError}
    exec(f"def main(argv):\n    {body}\n", namespace)
    module = types.ModuleType(cli.command_module(name))
    module.build_parser, module.main = build_parser, namespace["main"]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli.COMMANDS, name, cli.Command("test"))


def test_usage_error_exits_2(monkeypatch, capsys):
    _fake_command(monkeypatch, "raise UsageError('no such clip folder')")
    assert cli.main(["fake"]) == 2
    assert capsys.readouterr().err == "vtcaps fake: error: no such clip folder\n"


def test_ctrl_c_exits_130(monkeypatch, capsys):
    _fake_command(monkeypatch, "raise KeyboardInterrupt")
    assert cli.main(["fake"]) == 130
    assert capsys.readouterr().err == "vtcaps fake: interrupted\n"


def test_other_exceptions_exit_1_with_one_line_and_a_traceback_only_when_verbose(monkeypatch, capsys):
    _fake_command(monkeypatch, "raise RuntimeError('disk full')")
    assert cli.main(["fake"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "RuntimeError: disk full" in err
    assert "Traceback" not in err
    assert cli.main(["--verbose", "fake"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "disk full" in err


def test_a_command_status_passes_through(monkeypatch):
    _fake_command(monkeypatch, "return 1 if argv else 0")
    assert cli.main(["fake"]) == 0
    assert cli.main(["fake", "x"]) == 1


def test_flags_are_checked_before_the_command_runs(monkeypatch, capsys):
    _fake_command(monkeypatch, "raise RuntimeError('ran')")
    with pytest.raises(SystemExit) as exc:
        cli.main(["fake", "--no-such-flag"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


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
