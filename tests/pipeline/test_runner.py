"""The TFX-style step runner: fingerprints, caching, blessing, failures, and the stage wiring."""

import dataclasses
import hashlib
import json
import os

import pytest

from vtcaps_pipeline.orchestration import runner
from vtcaps_pipeline.orchestration.runner import Pipeline, Step, StepContext
from vtcaps_tf.errors import UsageError


# ---- fake steps: each counts its runs and writes something derived from its config and inputs ----

def _fake_steps(calls):
    def gen(ctx):
        calls.append("gen")
        with open(os.path.join(ctx.config["input"], "data.txt")) as f:
            data = f.read()
        with open(os.path.join(ctx.output, "examples.txt"), "w") as f:
            f.write(data.upper())
        return {"n": len(data)}

    def train(ctx):
        calls.append("train")
        with open(os.path.join(ctx.inputs["Gen"], "examples.txt")) as f:
            data = f.read()
        with open(os.path.join(ctx.output, "model.txt"), "w") as f:
            f.write(f"{data}|lr={ctx.config['lr']}")
        return {}

    def evaluate(ctx):
        calls.append("evaluate")
        acc = ctx.config["accuracy"]  # the fake model's "measured" accuracy
        with open(os.path.join(ctx.output, "report.json"), "w") as f:
            json.dump({"accuracy": acc}, f)
        return {"accuracy": acc, "blessed": acc >= ctx.config["threshold"]}

    def push(ctx):
        calls.append("push")
        with open(os.path.join(ctx.output, "pushed.txt"), "w") as f:
            f.write("v1")
        return {"pushed": True}

    return [Step("Gen", gen, "gen", external_inputs=lambda c: [c["input"]]),
            Step("Train", train, "train", inputs=("Gen",)),
            Step("Evaluate", evaluate, "evaluate", inputs=("Train",)),
            Step("Push", push, "push", inputs=("Train",), requires_blessing="Evaluate")]


@pytest.fixture
def setup(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "data.txt").write_text("abc")
    config = {"pipeline_root": str(tmp_path / "root"), "gen": {"input": str(data)},
              "train": {"lr": 0.1}, "evaluate": {"accuracy": 0.95, "threshold": 0.9}, "push": {}}
    calls = []
    return config, calls, data


def _run(config, calls, **kw):
    return {r.name: r.status for r in
            Pipeline(config["pipeline_root"], _fake_steps(calls), config, log=lambda _: None).run(**kw)}


def test_first_run_runs_everything_second_run_is_cached(setup):
    config, calls, _ = setup
    assert _run(config, calls) == {"Gen": "ran", "Train": "ran", "Evaluate": "ran", "Push": "ran"}
    assert calls == ["gen", "train", "evaluate", "push"]
    root = config["pipeline_root"]
    assert open(os.path.join(root, "Train", "output", "model.txt")).read() == "ABC|lr=0.1"
    record = json.load(open(os.path.join(root, "Gen", "execution.json")))
    assert record["status"] == "complete" and record["result"] == {"n": 3}
    calls.clear()
    assert set(_run(config, calls).values()) == {"cached"}
    assert calls == []
    calls.clear()
    assert set(_run(config, calls, force=True).values()) == {"ran"}


def test_config_change_reruns_the_step_and_what_depends_on_its_output(setup):
    config, calls, _ = setup
    _run(config, calls)
    calls.clear()
    config["train"]["lr"] = 0.2
    assert _run(config, calls) == {"Gen": "cached", "Train": "ran", "Evaluate": "ran", "Push": "ran"}
    # A config change that leaves the step's output identical does not ripple downstream.
    calls.clear()
    config["gen"]["comment"] = "same data"
    assert _run(config, calls) == {"Gen": "ran", "Train": "cached", "Evaluate": "cached",
                                   "Push": "cached"}


def test_changed_input_data_reruns_the_chain(setup):
    config, calls, data = setup
    _run(config, calls)
    calls.clear()
    (data / "data.txt").write_text("abcd")
    assert _run(config, calls) == {"Gen": "ran", "Train": "ran", "Evaluate": "ran", "Push": "ran"}
    root = config["pipeline_root"]
    assert open(os.path.join(root, "Train", "output", "model.txt")).read() == "ABCD|lr=0.1"


def test_push_only_when_blessed(setup):
    config, calls, _ = setup
    config["evaluate"] = {"accuracy": 0.85, "threshold": 0.9}
    assert _run(config, calls)["Push"] == "not_blessed"
    assert "push" not in calls
    assert not os.path.exists(os.path.join(config["pipeline_root"], "Push", "output", "pushed.txt"))
    calls.clear()
    config["evaluate"]["threshold"] = 0.85  # accuracy equal to the threshold passes
    assert _run(config, calls) == {"Gen": "cached", "Train": "cached", "Evaluate": "ran", "Push": "ran"}


def test_failed_step_stops_the_chain_and_runs_again_next_time(setup):
    config, calls, _ = setup
    steps = _fake_steps(calls)

    def broken(ctx):
        raise RuntimeError("disk full")

    steps[1] = Step("Train", broken, "train", inputs=("Gen",))
    with pytest.raises(runner.PipelineError, match="Train failed.*disk full"):
        Pipeline(config["pipeline_root"], steps, config, log=lambda _: None).run()
    record = json.load(open(os.path.join(config["pipeline_root"], "Train", "execution.json")))
    assert record["status"] == "failed" and "disk full" in record["error"]
    assert calls == ["gen"]
    calls.clear()
    assert _run(config, calls)["Train"] == "ran"  # not cached: the last attempt failed


def test_steps_must_follow_their_inputs(setup):
    config, calls, _ = setup
    steps = _fake_steps(calls)
    with pytest.raises(ValueError, match="needs 'Gen'"):
        Pipeline(config["pipeline_root"], [steps[1], steps[0]], config)
    with pytest.raises(ValueError, match="unique"):
        Pipeline(config["pipeline_root"], [steps[0], steps[0]], config)


def test_fingerprint_path(tmp_path):
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_bytes(b"one")
    (d / "sub" / "b.txt").write_bytes(b"two")
    expected = hashlib.sha256(b"a.txt\x003\x00one" + b"sub/b.txt\x003\x00two").hexdigest()
    assert runner.fingerprint_path(str(d)) == expected
    quick = runner.fingerprint_path(str(d), content=False)
    (d / "a.txt").write_bytes(b"uno")  # same size, new content and time
    os.utime(d / "a.txt", ns=(1, 1))
    assert runner.fingerprint_path(str(d)) != expected
    assert runner.fingerprint_path(str(d), content=False) != quick
    with pytest.raises(FileNotFoundError):
        runner.fingerprint_path(str(tmp_path / "missing"))


# ---- the real chain's wiring, with fake stages standing in for the entry points ---------------------

def _ctx(tmp_path, config, results=None, **stages):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return StepContext("x", config, {}, str(out), results or {}, runner.Stages(**stages))


def test_example_gen_and_train_call_the_entry_points_and_pass_the_artefacts(tmp_path):
    from vtcaps_tf.config.options import from_mapping
    from vtcaps_tf.config.train_options import TrainConfig
    from vtcaps_tf.data.features import SHARD_SUFFIX
    from vtcaps_tf.train.fit import FnArgs

    from vtcaps_tf.config.preprocess import PreprocessOptions

    seen = []

    def generate_examples(output, options, beam_args=()):
        seen.append((output, options, beam_args))
        with open(os.path.join(output, "metadata.json"), "w") as f:
            json.dump({"counts": {"train": 5}, "classes": ["a"]}, f)
        return output

    ctx = _ctx(tmp_path, {"source": "synthetic", "input": "in", "preset": "tiny", "seed": 3,
                          "split_ratios": [2, 1, 1], "beam_args": ["--direct_num_workers", "2"]},
               generate_examples=generate_examples)
    result = runner.run_example_gen(ctx)
    assert result == {"examples": ctx.output, "counts": {"train": 5}, "classes": ["a"]}
    # The job's own options (the output is the step's), typed; Beam's flags beside them.
    assert seen == [(ctx.output, PreprocessOptions(source="synthetic", input="in", preset="tiny", seed=3,
                                                   split_ratios=(2.0, 1.0, 1.0)),
                     ("--direct_num_workers", "2"))]
    assert type(seen[0][1]) is PreprocessOptions

    examples = tmp_path / "ex"
    examples.mkdir()
    for name in ("train-00000-of-00002", "train-00001-of-00002", "val-00000-of-00001", "test-00000-of-00001"):
        (examples / (name + SHARD_SUFFIX)).write_bytes(b"")
    model = tmp_path / "run" / "model.keras"
    model.parent.mkdir()
    model.write_bytes(b"k")
    calls = []

    def run_fn(fn_args):
        calls.append(fn_args)
        return type("Result", (), {"model_path": str(model)})()

    ctx = _ctx(tmp_path, {"preset": "tiny", "epochs": 4, "batch_size": 8, "use_tpn": False, "augment": False},
               results={"ExampleGen": {"examples": str(examples)}}, run_fn=run_fn)
    assert runner.run_train(ctx)["model"] == str(model)
    (fn_args,) = calls
    assert isinstance(fn_args, FnArgs) and fn_args.model_run_dir == ctx.output
    assert [os.path.basename(f) for f in fn_args.train_files] == [
        "train-00000-of-00002" + SHARD_SUFFIX, "train-00001-of-00002" + SHARD_SUFFIX]
    assert [os.path.basename(f) for f in fn_args.eval_files] == ["val-00000-of-00001" + SHARD_SUFFIX]
    # Every key of the section, the given ones with their values and the rest at their defaults,
    # as run_fn reads them back (TFX passes custom_config as plain JSON values).
    custom = dict(fn_args.custom_config)
    assert custom.pop("data_dir") == str(examples)
    json.dumps(custom)
    assert from_mapping(TrainConfig, custom, "t", data_dir="d", run_dir="r") == TrainConfig(
        data_dir="d", run_dir="r", preset="tiny", epochs=4, batch_size=8, use_tpn=False, augment=False)
    assert custom["augment"] == {"crop_scale": 1.0, "flip": False, "brightness": 0.0, "contrast": 0.0,
                                 "temporal_jitter": 0}

    def no_model(fn_args):
        return type("Result", (), {"model_path": str(tmp_path / "nothing.keras")})()

    ctx = _ctx(tmp_path, {}, results={"ExampleGen": {"examples": str(examples)}}, run_fn=no_model)
    with pytest.raises(FileNotFoundError, match="nothing.keras"):
        runner.run_train(ctx)


def test_unknown_keys_of_a_section_are_an_error(tmp_path):
    ctx = _ctx(tmp_path, {"preset": "tiny", "epochs": 2, "args": ["--no-augment"]},
               results={"ExampleGen": {"examples": "ex"}})
    with pytest.raises(ValueError, match=r"^train: unknown key 'args'; known: "):
        runner.run_train(ctx)


@pytest.mark.parametrize("section, body, message", [
    ("train", {"epochs": "ten"}, "train.epochs: expected an integer, got 'ten'"),
    ("train", {"epochz": 3}, "train: unknown key 'epochz'"),
    ("train", {"augment": {"flipp": True}}, "train.augment: unknown key 'flipp'"),
    ("train", {"model_overrides": {"tpn_stride": 2}},
     "train.model_overrides: unknown ModelConfig fields ['tpn_stride']"),
    ("train", {"run_dir": "elsewhere"}, "train: unknown key 'run_dir'"),  # the pipeline's own path
    ("crossval", {"val_folds": 1.5}, "crossval.val_folds: expected an integer, got 1.5"),
    ("crossval", {"flow": "sideways"}, "crossval.flow: 'sideways' is not one of isolation"),
    ("crossval", {"local_workers": 2}, "crossval: unknown key 'local_workers'"),
    ("crossval", [1], "crossval: expected a mapping of options, got [1]"),
])
def test_a_wrong_type_or_key_in_train_or_crossval_fails_when_the_config_loads(tmp_path, capsys, section,
                                                                            body, message):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"pipeline_root": str(tmp_path / "root"), section: body}))
    with pytest.raises(ValueError) as err:
        runner.load_config(str(path))
    assert str(err.value).startswith(f"{path}: {message}")
    from vtcaps_tf.cli.main import main as vtcaps

    assert vtcaps(["pipeline", "run", "--config", str(path)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "root").exists()  # refused before any step ran


def test_the_options_sections_and_their_keys_come_from_the_options_classes():
    from vtcaps_tf.config.options import config_keys
    from vtcaps_tf.config.train_options import CrossvalOptions, TrainConfig

    assert runner.SECTIONS["train"] is TrainConfig and runner.SECTIONS["crossval"] is CrossvalOptions
    assert config_keys(TrainConfig) and config_keys(CrossvalOptions)  # what load_config checks against


def _evaluate_returning(report, seen):
    def evaluate(model_path, data_dir, split, output):
        seen.append((model_path, data_dir, split, output))
        return report
    return evaluate


def test_evaluate_blessing_says_its_level(tmp_path):
    report = {"accuracy": 0.6, "macro_f1": 0.5, "video": {"accuracy": 0.95, "macro_f1": 0.9}}
    results = {"ExampleGen": {"examples": "ex"}, "Train": {"model": "tr/model.keras"}}
    for level, blessed, judged in (("clip", False, 0.6), ("video", True, 0.95)):
        config = {"accuracy_threshold": 0.9, "level": level}
        ctx = _ctx(tmp_path, config, results, evaluate=_evaluate_returning(report, []))
        result = runner.run_evaluate(ctx)
        assert result["blessed"] is blessed and result["accuracy"] == judged
        blessing = json.load(open(tmp_path / "out" / runner.BLESSING_FILE))
        assert blessing["level"] == level and blessing["blessed"] is blessed
        assert blessing["clip_accuracy"] == 0.6 and blessing["video_accuracy"] == 0.95


def test_evaluate_blesses_against_the_threshold_and_push_exports(tmp_path, capsys):
    results = {"ExampleGen": {"examples": "ex"}, "Train": {"model": "tr/model.keras"}}
    for accuracy, blessed in ((0.93, True), (0.89, False)):
        seen = []
        ctx = _ctx(tmp_path, {"accuracy_threshold": 0.9}, results,
                   evaluate=_evaluate_returning({"accuracy": accuracy, "macro_f1": 0.5}, seen))
        result = runner.run_evaluate(ctx)
        assert result["blessed"] is blessed and result["accuracy"] == accuracy
        assert json.load(open(tmp_path / "out" / runner.BLESSING_FILE))["blessed"] is blessed
        assert seen == [("tr/model.keras", "ex", "test", ctx.output)]

    exported = []

    def export(model_path, base_path, version):
        exported.append((model_path, base_path, version))
        return os.path.join(base_path, "3")

    ctx = _ctx(tmp_path, {"base_path": "saved_models/vtcaps"}, results, export=export)
    assert runner.run_push(ctx)["pushed"] == os.path.join("saved_models/vtcaps", "3")
    assert exported == [("tr/model.keras", "saved_models/vtcaps", None)]
    with pytest.raises(ValueError, match="base_path"):
        runner.run_push(_ctx(tmp_path, {}, results, export=export))


def _stats(per_class_train, per_class_test, test_subjects, listed, dead, counters=None):
    return {"splits": {"train": {"clips_per_class": per_class_train, "subjects": ["s1", "s2"]},
                       "test": {"clips_per_class": per_class_test, "subjects": test_subjects}},
            "videos": {"listed": listed}, "counters": counters or {}, "dead_letters": dead}


def test_validate_applies_one_set_of_thresholds():
    meta = {"classes": ["anger", "happy"]}
    defaults = runner.ValidationThresholds()
    good = _stats({"anger": 3, "happy": 2}, {"anger": 1, "happy": 1}, ["s3"], 10, {"no_face": 2})
    assert runner.find_anomalies(good, meta, defaults) == []  # 2 of 10 = 20%: at the limit
    bad = _stats({"anger": 3}, {"anger": 1, "happy": 1}, [], 10, {"no_face": 3})
    assert runner.find_anomalies(bad, meta, defaults) == [
        "train split has no clip of ['happy']",
        "test holds 0 test subjects, fewer than min_test_subjects=1",
        "3 of 10 videos gave no clip (limit 20%)"]
    strict = runner.ValidationThresholds(max_dead_letter_fraction=0.1, min_test_subjects=2)
    assert runner.find_anomalies(good, meta, strict) == [
        "test holds 1 test subjects, fewer than min_test_subjects=2",
        "2 of 10 videos gave no clip (limit 10%)"]
    # Folds: each fold is a test set and may lack a class.
    folds = {"splits": {"fold00": {"clips_per_class": {"anger": 1}, "subjects": ["a"]},
                        "fold01": {"clips_per_class": {"happy": 1}, "subjects": []}},
             "videos": {"listed": 2}, "counters": {}, "dead_letters": {}}
    assert runner.find_anomalies(folds, {"classes": ["anger", "happy"], "folds": 2}, defaults) == [
        "fold01 holds 0 test subjects, fewer than min_test_subjects=1"]


def test_dead_letters_are_a_share_of_the_videos_listed_whatever_the_runner_reports():
    meta = {"classes": ["anger", "happy"]}
    limit = runner.ValidationThresholds(max_dead_letter_fraction=0.3)
    train, test = {"anger": 3, "happy": 2}, {"anger": 1, "happy": 1}
    # 10 videos listed, 3 of them unreadable: 3 / 10 = 30%, at the limit. Over the 7 the runner
    # read it would be 3 / 7 = 43%.
    unreadable = _stats(train, test, ["s3"], 10, {"unreadable": 3}, counters={"videos_read": 7})
    assert runner.find_anomalies(unreadable, meta, limit) == []
    # Every listed video unreadable: 4 of 4 (100%, never more), though the runner read none.
    none_read = _stats(train, test, ["s3"], 4, {"unreadable": 4}, counters={"videos_read": 0})
    assert runner.find_anomalies(none_read, meta, limit) == ["4 of 4 videos gave no clip (limit 30%)"]
    # A runner that reports no metrics: no counters, the check runs all the same.
    no_metrics = _stats(train, test, ["s3"], 10, {"no_face": 4})
    assert runner.find_anomalies(no_metrics, meta, limit) == ["4 of 10 videos gave no clip (limit 30%)"]
    # No count of the videos listed: the check cannot run, which is itself an anomaly.
    no_count = _stats(train, test, ["s3"], None, {"no_face": 1})
    del no_count["videos"]
    assert runner.find_anomalies(no_count, meta, limit) == [
        "the statistics hold no count of the videos listed or of the dead letters (ExampleGen's "
        "stats.json): the dead-letter fraction cannot be checked"]


def test_section_keys_are_the_fields_of_their_options():
    from vtcaps_tf.config.evaluate import EvaluateOptions, EvaluateStepOptions
    from vtcaps_tf.config.options import config_keys, spec_of
    from vtcaps_tf.config.preprocess import PreprocessOptions

    def fields(cls):
        return tuple(f.name for f in dataclasses.fields(cls))

    # example_gen: every option of `vtcaps preprocess` but its output (the step's own), and the
    # flags for Beam.
    assert runner.SECTIONS["example_gen"] is runner.ExampleGenOptions
    assert config_keys(runner.ExampleGenOptions) == tuple(
        n for n in fields(PreprocessOptions) if n != "output") + ("beam_args",)
    assert runner.SECTIONS["evaluate"] is EvaluateStepOptions
    for name in ("evaluate", "push", "validate", "statistics"):
        assert config_keys(runner.SECTIONS[name]) == fields(runner.SECTIONS[name]), name
    # `split`: one definition for `vtcaps evaluate --split` and the evaluate section.
    command = {f.name: f for f in dataclasses.fields(EvaluateOptions)}["split"]
    step = {f.name: f for f in dataclasses.fields(EvaluateStepOptions)}["split"]
    assert (command.default, spec_of(command)) == (step.default, spec_of(step))
    # Every key of every section is accepted with a value of its type, and read back.
    for name, values in {"example_gen": {"source": "ckplus", "input": "in", "folds": 3,
                                         "split_ratios": [2, 1, 1], "beam_args": ["--x"]},
                         "evaluate": {"split": "val", "accuracy_threshold": 0.5, "level": "video"},
                         "push": {"base_path": "b", "version": 4},
                         "validate": {"max_dead_letter_fraction": 0.5, "min_test_subjects": 3}}.items():
        options = runner.section_options(name, values)
        assert {k: getattr(options, k) for k in values} == {
            k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def test_a_field_added_to_a_section_is_a_key_the_config_may_set(tmp_path, monkeypatch):
    from vtcaps_tf.config.options import option

    @dataclasses.dataclass(frozen=True)
    class MoreEvaluate(runner.SECTIONS["evaluate"]):
        top_k: int = option(1, help="one more")

    monkeypatch.setitem(runner.SECTIONS, "evaluate", MoreEvaluate)
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"pipeline_root": "r", "evaluate": {"top_k": 3}}))
    assert runner.load_config(str(path))["evaluate"] == {"top_k": 3}
    path.write_text(json.dumps({"pipeline_root": "r", "evaluate": {"top_k": "3"}}))
    with pytest.raises(UsageError, match="evaluate.top_k: expected an integer, got '3'"):
        runner.load_config(str(path))


@pytest.mark.parametrize("section, value, message", [
    ("example_gen", {"source": "folder", "input": "in", "folds": "5"},
     "example_gen.folds: expected an integer, got '5'"),
    ("example_gen", {"source": "folder", "input": "in", "seed": 1.5},
     "example_gen.seed: expected an integer, got 1.5"),
    ("example_gen", {"source": "folder", "input": "in", "no_progress": "yes"},
     "example_gen.no_progress: expected true or false, got 'yes'"),
    ("example_gen", {"source": "folder", "input": "in", "beam_args": "--runner X"},
     "example_gen.beam_args: expected a list of strings, got '--runner X'"),
    ("example_gen", {"source": "folder", "input": "in", "split_ratios": "0.7,0.15,0.15"},
     "example_gen.split_ratios: expected a list of numbers, got '0.7,0.15,0.15'"),
    ("example_gen", {"source": "folder", "input": "in", "split_ratios": [1, 2]},
     "example_gen: need 3 split ratios"),
    ("example_gen", {"source": "folders", "input": "in"},
     "example_gen.source: 'folders' is not one of folder, ckplus, afew, synthetic"),
    ("example_gen", {"source": "folder", "input": "in", "output": "o"}, "example_gen: unknown key 'output'"),
    ("example_gen", {"source": "folder"}, "example_gen.input: required, not set"),
    ("evaluate", {"accuracy_threshold": "0.9"}, "evaluate.accuracy_threshold: expected a number, got '0.9'"),
    ("evaluate", {"level": "frame"}, "evaluate.level: 'frame' is not one of clip, video"),
    ("evaluate", {"splitt": "test"}, "evaluate: unknown key 'splitt'"),
    ("push", {"base_path": 3}, "push.base_path: expected a string, got 3"),
    ("push", {"base_path": "b", "version": "2"}, "push.version: expected an integer or null, got '2'"),
    ("push", {}, "push.base_path: required, not set"),
    ("validate", {"max_dead_letter_fraction": "0.2"},
     "validate.max_dead_letter_fraction: expected a number, got '0.2'"),
    ("validate", {"min_test_subjects": 1.5}, "validate.min_test_subjects: expected an integer, got 1.5"),
    ("validate", {"max_dead_letter_fraction": -0.1}, "validate.max_dead_letter_fraction: must be at least 0"),
    ("statistics", {"x": 1}, "statistics: unknown key 'x'"),
    ("train", {"epochz": 1}, "train: unknown key 'epochz'"),
])
def test_a_wrong_type_or_key_is_refused_naming_it_before_any_step_runs(tmp_path, section, value, message):
    from vtcaps_tf.cli import main as vtcaps

    root = tmp_path / "root"
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"pipeline_root": str(root), section: value}))
    with pytest.raises(UsageError) as err:
        runner.load_config(str(path))
    assert f"{path}: {message}" in str(err.value)
    assert vtcaps.main(["pipeline", "run", "--config", str(path)]) == 2
    assert not root.exists()  # no step ran


def test_config_errors(tmp_path, capsys):
    from vtcaps_tf.cli.main import main as vtcaps

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"pipeline_root": "r", "trian": {}}))
    assert vtcaps(["pipeline", "run", "--config", str(bad)]) == 2
    assert "unknown sections ['trian']" in capsys.readouterr().err
    assert vtcaps(["pipeline", "run", "--config", str(tmp_path / "none.json")]) == 2
    assert "no pipeline config at" in capsys.readouterr().err
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"pipeline_root": "r", "validate": {"max_dead_letters": 0.1}}))
    assert vtcaps(["pipeline", "run", "--config", str(typo)]) == 2
    assert "validate: unknown key 'max_dead_letters'" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text('{"pipeline_root": "r",')
    assert vtcaps(["pipeline", "run", "--config", str(broken)]) == 2
    assert f"{broken}: not valid JSON" in capsys.readouterr().err
    good = tmp_path / "c.yaml"
    good.write_text("pipeline_root: r\ntrain:\n  epochs: 2\n")
    assert runner.load_config(str(good)) == {"pipeline_root": "r", "train": {"epochs": 2}}


def test_bad_input_is_a_usage_error_and_a_failing_step_a_pipeline_error(setup):
    from vtcaps_tf.errors import UsageError

    config, calls, data = setup
    # A missing input of the chain: nothing runs.
    missing = dict(config, gen={"input": str(data) + "-missing"})
    with pytest.raises(UsageError, match="Gen: no such input .*data-missing"):
        Pipeline(missing["pipeline_root"], _fake_steps(calls), missing, log=lambda _: None).run()
    assert calls == []
    # A step that finds its input unusable: a UsageError naming the step; any other failure of a
    # step: a PipelineError.
    for error, raised in [(UsageError("no clip in the data"), UsageError),
                          (OSError("disk full"), runner.PipelineError)]:
        steps = _fake_steps(calls)

        def broken(ctx, error=error):
            raise error

        steps[1] = Step("Train", broken, "train", inputs=("Gen",))
        with pytest.raises(raised, match=f"step Train.*{error}") as caught:
            Pipeline(config["pipeline_root"], steps, config, log=lambda _: None).run()
        assert caught.type is raised and caught.value.__cause__ is error


def test_demo_scores_rest_predictions_against_the_manifest():
    from vtcaps_pipeline.orchestration import demo

    manifest = {"videos": [{"path": "happy/s00_0.avi", "label": "happy"},
                           {"path": "anger/s01_1.avi", "label": "anger"},
                           {"path": "fear/s00_2.avi", "label": "fear"}]}
    predictions = [{"video": "/x/heldout/happy/s00_0.avi", "emotion": "happy"},
                   {"video": "/x/heldout/anger/s01_1.avi", "emotion": "fear"},
                   {"video": "/x/heldout/fear/s00_2.avi", "error": "no face"}]
    assert demo.predict_accuracy(predictions, manifest) == (0.5, 2)  # the failed video is not scored


def test_crossval_config_chains_folds_into_crossval_and_resumes_after_a_kill(tmp_path):
    config = {"pipeline_root": str(tmp_path / "root"), "example_gen": {"folds": 10},
              "crossval": {"preset": "paper", "epochs": 500, "batch_size": 16}}
    assert [s.name for s in runner.default_steps(config)] == [
        "ExampleGen", "Statistics", "Validate", "CrossVal"]
    with pytest.raises(ValueError):
        runner.default_steps(dict(config, train={}))
    seen = []

    def crossval(options):
        seen.append(options)
        return {"folds": [{}, {}], "mean": {"video_accuracy": 0.5}, "std": {"video_accuracy": 0.1}}

    ctx = _ctx(tmp_path, config["crossval"], {"ExampleGen": {"examples": "ex"}}, crossval=crossval)
    result = runner.run_crossval(ctx)
    from vtcaps_tf.config.train_options import CrossvalOptions

    assert seen == [CrossvalOptions(data_dir="ex", output=ctx.output, preset="paper", epochs=500,
                                    batch_size=16)]
    assert result["folds"] == 2 and result["mean"] == {"video_accuracy": 0.5}

    # A resumable step killed mid-run keeps its output for the next run; another step does not.
    runs = []

    def slow(ctx):
        runs.append(sorted(os.listdir(ctx.output)))
        open(os.path.join(ctx.output, f"part{len(runs)}"), "w").close()
        if len(runs) == 1:
            raise KeyboardInterrupt  # killed: no completion record
        return {}

    for resumable, second_sees in ((True, ["part1"]), (False, [])):
        runs.clear()
        root = str(tmp_path / f"r{resumable}")
        steps = [Step("S", slow, "s", resumable=resumable)]
        with pytest.raises(KeyboardInterrupt):
            Pipeline(root, steps, {"s": {}}, log=lambda m: None).run()
        Pipeline(root, steps, {"s": {}}, log=lambda m: None).run()
        assert runs == [[], second_sees]


@pytest.mark.parametrize("name", ["demo", "ckplus", "ckplus_cpu", "afew", "afew_cpu"])
def test_shipped_configs_load_and_build_their_typed_options(name):
    path = os.path.join(os.path.dirname(runner.__file__), "configs", f"{name}.json")
    config = runner.load_config(path)
    section = "crossval" if "crossval" in config else "train"
    options = runner.section_options(section, config[section], data_dir="d", run_dir="r", output="o")
    for key, value in config[section].items():
        if key != "augment":
            assert getattr(options, key) == value, key
    if config[section].get("augment") is False:
        assert options.augment.flip is False and options.augment.crop_scale == 1.0
