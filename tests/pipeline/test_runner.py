"""The TFX-style step runner: fingerprints, caching, blessing, failures, and the stage wiring."""

import hashlib
import json
import os

import pytest

from vtcaps_pipeline.orchestration import runner
from vtcaps_pipeline.orchestration.runner import Pipeline, Step, StepContext


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
    from vtcaps_tf.data.dataset import AugmentConfig
    from vtcaps_tf.data.features import SHARD_SUFFIX
    from vtcaps_tf.train.fit import FnArgs

    seen = []

    def generate_examples(output, **kwargs):
        seen.append(kwargs)
        with open(os.path.join(output, "metadata.json"), "w") as f:
            json.dump({"counts": {"train": 5}, "classes": ["a"]}, f)
        return output

    ctx = _ctx(tmp_path, {"source": "synthetic", "input": "in", "preset": "tiny", "seed": 3,
                          "beam_args": ["--direct_num_workers", "2"]}, generate_examples=generate_examples)
    result = runner.run_example_gen(ctx)
    assert result == {"examples": ctx.output, "counts": {"train": 5}, "classes": ["a"]}
    assert seen == [{"source": "synthetic", "input_dir": "in", "preset": "tiny",
                     "beam_args": ("--direct_num_workers", "2"), "seed": 3}]

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
    assert fn_args.custom_config == {"data_dir": str(examples), "preset": "tiny", "epochs": 4,
                                     "batch_size": 8, "use_tpn": False, "augment": AugmentConfig.none()}

    def no_model(fn_args):
        return type("Result", (), {"model_path": str(tmp_path / "nothing.keras")})()

    ctx = _ctx(tmp_path, {}, results={"ExampleGen": {"examples": str(examples)}}, run_fn=no_model)
    with pytest.raises(FileNotFoundError, match="nothing.keras"):
        runner.run_train(ctx)


def test_augment_takes_false_true_or_a_dict_of_its_fields():
    from vtcaps_tf.data.dataset import AugmentConfig

    for value, want in [(False, AugmentConfig.none()), (True, None),
                        ({"flip": False, "temporal_jitter": 0}, AugmentConfig(flip=False, temporal_jitter=0))]:
        options = {"augment": value}
        runner._augment(options)
        assert options.get("augment") == want
    for bad, match in [({"flipp": True}, r"unknown augment keys \['flipp'\]"), ("yes", "true, false or a dict")]:
        with pytest.raises(ValueError, match=match):
            runner._augment({"augment": bad})


def test_unknown_keys_of_a_section_are_an_error(tmp_path):
    ctx = _ctx(tmp_path, {"preset": "tiny", "epochs": 2, "args": ["--no-augment"]})
    with pytest.raises(ValueError, match=r"train: unknown keys \['args'\]"):
        runner.run_train(ctx)


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


def _stats(per_class_train, per_class_test, test_subjects, videos_read, dead):
    return {"splits": {"train": {"clips_per_class": per_class_train, "subjects": ["s1", "s2"]},
                       "test": {"clips_per_class": per_class_test, "subjects": test_subjects}},
            "counters": {"videos_read": videos_read}, "dead_letters": dead}


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
             "counters": {}, "dead_letters": {}}
    assert runner.find_anomalies(folds, {"classes": ["anger", "happy"], "folds": 2}, defaults) == [
        "fold01 holds 0 test subjects, fewer than min_test_subjects=1"]


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
    assert "validate: unknown keys ['max_dead_letters']" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text('{"pipeline_root": "r",')
    assert vtcaps(["pipeline", "run", "--config", str(broken)]) == 2
    assert f"{broken}: not JSON" in capsys.readouterr().err
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

    def crossval(data_dir, output, **options):
        seen.append((data_dir, output, options))
        return {"folds": [{}, {}], "mean": {"video_accuracy": 0.5}, "std": {"video_accuracy": 0.1}}

    ctx = _ctx(tmp_path, config["crossval"], {"ExampleGen": {"examples": "ex"}}, crossval=crossval)
    result = runner.run_crossval(ctx)
    assert seen == [("ex", ctx.output, {"preset": "paper", "epochs": 500, "batch_size": 16})]
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
def test_shipped_configs_load_and_their_train_keys_are_config_fields(name):
    import dataclasses

    from vtcaps_tf.train.fit import TrainConfig

    path = os.path.join(os.path.dirname(runner.__file__), "configs", f"{name}.json")
    config = runner.load_config(path)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(config.get("train", {})) <= fields
    assert set(runner.TRAIN_KEYS) <= fields
