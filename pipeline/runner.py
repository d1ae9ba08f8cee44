"""`vtcaps pipeline run --config FILE`: the TFX-style chain
ExampleGen -> Statistics -> Validate -> Train -> Evaluate -> Push.

Every step writes its artefacts to `<pipeline_root>/<Step>/output/` and a record of the run to
`<pipeline_root>/<Step>/execution.json`. A step is skipped (cached, as TFX's MLMD cache does) when
its fingerprint is unchanged: the hash of its config section and of its inputs (the upstream
steps' output fingerprints, or for ExampleGen the input data's file list, sizes and times). Push
runs only when Evaluate blessed the model (test accuracy at or above `evaluate.accuracy_threshold`,
clip by clip or, with `evaluate.level: "video"`, video by video),
like TFX's Evaluator blessing.

The stages are called through their `cli_main(argv)` with the contract's flags, the interface they
keep stable; a test passes its own `stage_caller`.

Config (JSON, or YAML when the file ends in .yaml/.yml):
    {"pipeline_root": "demo_out/pipeline",
     "example_gen": {"source": "synthetic", "input": "demo_out/synth", "preset": "tiny", "args": []},
     "statistics": {},
     "validate": {"max_dead_letter_fraction": 0.2, "min_test_subjects": 1},
     "train": {"preset": "tiny", "epochs": 20, "batch_size": 16, "args": []},
     "evaluate": {"split": "test", "accuracy_threshold": 0.9},
     "push": {"base_path": "saved_models/vtcaps"}}
Relative paths are relative to the current directory.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib
import io
import json
import os
import shutil
import sys
import time
from typing import Callable

EXECUTION_FILE = "execution.json"
BLESSING_FILE = "blessing.json"
FINGERPRINT_VERSION = 1


class PipelineError(RuntimeError):
    """A step failed; the message names it. Steps after it do not run."""


class StageError(RuntimeError):
    """A stage's `cli_main` returned non-zero."""


# ---- fingerprints ---------------------------------------------------------------------------------

def fingerprint_path(path: str, content: bool = True) -> str:
    """sha256 over the files under `path` (or of the file): relative names and sizes, plus the
    bytes (`content=True`, for artefacts) or the modification times (`content=False`, cheap for
    large input data sets)."""
    h = hashlib.sha256()
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file or directory: {path!r}")
    if os.path.isfile(path):
        files = [(os.path.basename(path), path)]
    else:
        files = []
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                files.append((os.path.relpath(full, path).replace(os.sep, "/"), full))
    for rel, full in files:
        st = os.stat(full)
        h.update(f"{rel}\0{st.st_size}\0".encode())
        if content:
            with open(full, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        else:
            h.update(str(st.st_mtime_ns).encode())
    return h.hexdigest()


def fingerprint_values(*values) -> str:
    """sha256 of JSON-serialisable values, key order ignored."""
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# ---- steps and the runner -------------------------------------------------------------------------

@dataclasses.dataclass
class StepContext:
    """What a step function sees."""

    name: str
    config: dict  # the step's config section
    inputs: dict  # upstream step name -> its output directory
    output: str  # this step's (empty) output directory
    results: dict  # upstream step name -> the result dict it returned
    call: Callable[[str, list], int]  # stage caller: (module name, argv) -> 0, raises StageError


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[StepContext], dict]  # -> JSON-serialisable result, kept in execution.json
    config_key: str
    inputs: tuple[str, ...] = ()  # upstream steps whose outputs this step reads
    external_inputs: Callable[[dict], list[str]] | None = None  # config -> paths outside the root
    requires_blessing: str | None = None  # run only if this step's result says blessed
    resumable: bool = False  # an interrupted run with the same fingerprint keeps its output


@dataclasses.dataclass
class StepResult:
    name: str
    status: str  # "ran", "cached", "not_blessed"
    seconds: float
    output: str
    result: dict


def call_stage(module_name: str, argv: list[str]) -> int:
    """Run `module.cli_main(argv)`; a non-zero exit becomes a StageError."""
    module = importlib.import_module(module_name)
    code = int(module.cli_main([str(a) for a in argv]) or 0)
    if code != 0:
        raise StageError(f"{module_name}.cli_main({argv}) exited with {code}")
    return code


class Pipeline:
    """Steps in order; `run()` executes the ones whose fingerprint changed."""

    def __init__(self, root: str, steps: list[Step], config: dict,
                 stage_caller: Callable[[str, list], int] = call_stage, log=None):
        names = [s.name for s in steps]
        if len(set(names)) != len(names):
            raise ValueError(f"step names must be unique: {names}")
        for i, step in enumerate(steps):
            for dep in step.inputs + ((step.requires_blessing,) if step.requires_blessing else ()):
                if dep not in names[:i]:
                    raise ValueError(f"step {step.name!r} needs {dep!r}, which does not run before it")
        self.root = os.path.abspath(root)
        self.steps = steps
        self.config = config
        self.stage_caller = stage_caller
        self.log = log or (lambda text: print(text, file=sys.stderr, flush=True))

    def step_dir(self, name: str) -> str:
        return os.path.join(self.root, name)

    def output_dir(self, name: str) -> str:
        return os.path.join(self.root, name, "output")

    def read_execution(self, name: str) -> dict | None:
        path = os.path.join(self.step_dir(name), EXECUTION_FILE)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    def _write_execution(self, name: str, record: dict):
        os.makedirs(self.step_dir(name), exist_ok=True)
        path = os.path.join(self.step_dir(name), EXECUTION_FILE)
        with open(path + ".tmp", "w") as f:
            json.dump(record, f, indent=2, default=str)
        os.replace(path + ".tmp", path)  # a crash never leaves a half-written record

    def fingerprint(self, step: Step, upstream: dict) -> str:
        section = self.config.get(step.config_key) or {}
        external = []
        if step.external_inputs is not None:
            external = [(p, fingerprint_path(p, content=False)) for p in step.external_inputs(section)]
        deps = {d: upstream[d]["output_fingerprint"] for d in step.inputs}
        if step.requires_blessing:
            deps[step.requires_blessing] = upstream[step.requires_blessing]["output_fingerprint"]
        return fingerprint_values(FINGERPRINT_VERSION, step.name, section, external, deps)

    def run(self, force: bool = False) -> list[StepResult]:
        os.makedirs(self.root, exist_ok=True)
        upstream: dict[str, dict] = {}
        out = []
        for step in self.steps:
            fp = self.fingerprint(step, upstream)
            previous = self.read_execution(step.name)
            output = self.output_dir(step.name)
            if step.requires_blessing and not upstream[step.requires_blessing]["result"].get("blessed"):
                record = {"step": step.name, "status": "not_blessed", "fingerprint": fp,
                          "output_fingerprint": fingerprint_values("not_blessed", fp), "result": {},
                          "seconds": 0.0}
                self._write_execution(step.name, record)
                self.log(f"[{step.name}] skipped: {step.requires_blessing} did not bless the model")
                out.append(StepResult(step.name, "not_blessed", 0.0, output, {}))
                upstream[step.name] = record
                continue
            if (not force and previous and previous.get("status") == "complete"
                    and previous.get("fingerprint") == fp and os.path.isdir(output)):
                self.log(f"[{step.name}] cached: inputs and config unchanged "
                         f"(ran {previous.get('finished', '?')}, {previous.get('seconds', 0):.1f} s)")
                out.append(StepResult(step.name, "cached", 0.0, output, previous.get("result", {})))
                upstream[step.name] = previous
                continue
            resume = (step.resumable and previous and previous.get("fingerprint") == fp
                      and previous.get("status") in ("running", "failed"))
            if os.path.isdir(output) and not resume:
                shutil.rmtree(output)  # stale artefacts of another fingerprint
            os.makedirs(output, exist_ok=True)
            ctx = StepContext(step.name, dict(self.config.get(step.config_key) or {}),
                              {d: self.output_dir(d) for d in step.inputs}, output,
                              {d: upstream[d]["result"] for d in upstream}, self.stage_caller)
            self.log(f"[{step.name}] {'resuming' if resume else 'running'}")
            start = time.monotonic()
            started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            if step.resumable:  # so that a killed run is recognised and resumed
                self._write_execution(step.name, {"step": step.name, "status": "running",
                                                  "fingerprint": fp, "started": started})
            try:
                result = step.run(ctx) or {}
            except Exception as err:
                seconds = time.monotonic() - start
                self._write_execution(step.name, {"step": step.name, "status": "failed", "fingerprint": fp,
                                                  "error": f"{type(err).__name__}: {err}",
                                                  "started": started, "seconds": round(seconds, 2)})
                raise PipelineError(f"step {step.name} failed after {seconds:.1f} s: "
                                    f"{type(err).__name__}: {err}") from err
            seconds = time.monotonic() - start
            record = {"step": step.name, "status": "complete", "fingerprint": fp,
                      "output_fingerprint": fingerprint_path(output, content=True),
                      "config": self.config.get(step.config_key) or {}, "result": result,
                      "started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                      "seconds": round(seconds, 2)}
            self._write_execution(step.name, record)
            self.log(f"[{step.name}] done in {seconds:.1f} s")
            out.append(StepResult(step.name, "ran", seconds, output, result))
            upstream[step.name] = record
        return out


# ---- the six TFX-style steps over the vtcaps stages -----------------------------------------------

def _extra_args(section: dict) -> list[str]:
    args = section.get("args") or []
    if not isinstance(args, list):
        raise ValueError("a step's `args` must be a list of command-line words")
    return [str(a) for a in args]


def run_example_gen(ctx: StepContext) -> dict:
    c = ctx.config
    for key in ("source", "input"):
        if key not in c:
            raise ValueError(f"example_gen needs {key!r}")
    argv = ["--source", c["source"], "--input", c["input"], "--output", ctx.output,
            "--preset", c.get("preset", "small")]
    for key, flag in (("clip_frames", "--clip-frames"), ("long_frames", "--long-frames"),
                      ("image_size", "--image-size"), ("split_ratios", "--split-ratios"),
                      ("seed", "--seed"), ("folds", "--folds"), ("short_policy", "--short-policy"),
                      ("clip_labels", "--clip-labels")):
        if c.get(key) is not None:
            argv += [flag, c[key]]
    ctx.call("pipeline.preprocess", argv + _extra_args(c))
    with open(os.path.join(ctx.output, "metadata.json")) as f:
        meta = json.load(f)
    return {"counts": meta.get("counts", {}), "classes": meta.get("classes", [])}


def run_statistics(ctx: StepContext) -> dict:
    from pipeline import checks
    from vtcaps_tf.data import features

    examples = ctx.inputs["ExampleGen"]
    splits = features.data_splits(features.read_metadata(examples))
    stats = {split: checks.split_statistics(examples, split) for split in splits}
    for s in stats.values():  # sets of ids are for validation, not for the report
        s["label_ids"] = {k: sorted(v) for k, v in s["label_ids"].items()}
    gen_stats_path = os.path.join(examples, features.STATS_FILE)
    job = {}
    if os.path.exists(gen_stats_path):
        with open(gen_stats_path) as f:
            job = json.load(f)
    report = {"splits": stats, "dead_letters": job.get("dead_letters", {}),
              "counters": job.get("counters", {})}
    with open(os.path.join(ctx.output, "statistics.json"), "w") as f:
        json.dump(report, f, indent=2, default=list)
    return {split: {"clips": s["clips"], "subjects": len(s["subjects"])} for split, s in stats.items()}


def run_validate(ctx: StepContext) -> dict:
    """Schema and anomaly checks (TFX ExampleValidator): a problem stops the pipeline."""
    from pipeline import checks
    from vtcaps_tf.data import features

    examples = ctx.inputs["ExampleGen"]
    meta = features.read_metadata(examples)
    problems = []
    splits = features.data_splits(meta)
    try:
        checks.validate(examples, meta["classes"], meta["clip_frames"], meta["long_frames"],
                        meta["image_size"], splits=splits)
    except checks.ValidationError as err:
        problems.append(str(err))
    with open(os.path.join(ctx.inputs["Statistics"], "statistics.json")) as f:
        stats = json.load(f)
    # Cross-validation folds are each a test set; a fold may lack a rare class (CK+'s contempt).
    tests = splits if meta.get("folds") else ["test"]
    for split in ([] if meta.get("folds") else ["train", "test"]):
        per_class = stats["splits"][split]["clips_per_class"]
        missing = [c for c in meta["classes"] if not per_class.get(c)]
        if missing:
            problems.append(f"{split} split has no clip of {missing}")
    need = int(ctx.config.get("min_test_subjects", 1))
    for split in tests:
        have = len(stats["splits"][split]["subjects"])
        if have < need:
            problems.append(f"{split} holds {have} test subjects, fewer than min_test_subjects={need}")
    videos = stats["counters"].get("videos_read", 0)
    dead = sum(stats["dead_letters"].values()) if isinstance(stats["dead_letters"], dict) else 0
    limit = float(ctx.config.get("max_dead_letter_fraction", 0.2))
    if videos and dead / videos > limit:
        problems.append(f"{dead} of {videos} videos gave no clip (limit {limit:.0%})")
    with open(os.path.join(ctx.output, "anomalies.json"), "w") as f:
        json.dump({"problems": problems}, f, indent=2)
    if problems:
        raise ValueError("validation found anomalies:\n  - " + "\n  - ".join(problems))
    return {"problems": 0}


def run_train(ctx: StepContext) -> dict:
    c = ctx.config
    argv = ["--data", ctx.inputs["ExampleGen"], "--run-dir", ctx.output,
            "--preset", c.get("preset", "small")]
    for key, flag in (("epochs", "--epochs"), ("batch_size", "--batch-size"),
                      ("learning_rate", "--learning-rate"), ("cpu_replicas", "--cpu-replicas"),
                      ("seed", "--seed"), ("flow", "--flow"), ("fusion", "--fusion"),
                      ("steps_per_epoch", "--steps-per-epoch"), ("verbose", "--verbose")):
        if c.get(key) is not None:
            argv += [flag, c[key]]
    if c.get("use_tpn") is False:
        argv.append("--no-tpn")
    ctx.call("vtcaps_tf.training", argv + _extra_args(c))
    model = os.path.join(ctx.output, "model.keras")
    if not os.path.exists(model):
        raise FileNotFoundError(f"training wrote no {model}")
    return {"model": model, "logdir": os.path.join(ctx.output, "logs")}


def run_evaluate(ctx: StepContext) -> dict:
    c = ctx.config
    split = c.get("split", "test")
    threshold = float(c.get("accuracy_threshold", 0.0))
    level = c.get("level", "clip")
    if level not in ("clip", "video"):
        raise ValueError(f"evaluate.level must be 'clip' or 'video', got {level!r}")
    ctx.call("vtcaps_tf.evaluate", ["--model", os.path.join(ctx.inputs["Train"], "model.keras"),
                                    "--data", ctx.inputs["ExampleGen"], "--split", split,
                                    "--output", ctx.output] + _extra_args(c))
    with open(os.path.join(ctx.output, "report.json")) as f:
        report = json.load(f)
    video = report.get("video") or {}
    judged = video if level == "video" else report
    blessed = bool(judged["accuracy"] >= threshold)
    blessing = {"blessed": blessed, "level": level, "accuracy": judged["accuracy"],
                "threshold": threshold, "split": split, "clip_accuracy": report["accuracy"],
                "video_accuracy": video.get("accuracy")}
    with open(os.path.join(ctx.output, BLESSING_FILE), "w") as f:
        json.dump(blessing, f, indent=2)
    return {**blessing, "macro_f1": judged.get("macro_f1"),
            "report": os.path.join(ctx.output, "report.json"),
            "confusion_matrix": os.path.join(ctx.output, "confusion_matrix.png")}


def run_crossval(ctx: StepContext) -> dict:
    """K-fold cross-validation on ExampleGen's folds (`vtcaps crossval`); resumes its folds."""
    c = ctx.config
    argv = ["--data", ctx.inputs["ExampleGen"], "--output", ctx.output,
            "--preset", c.get("preset", "small")]
    for key, flag in (("epochs", "--epochs"), ("batch_size", "--batch-size"),
                      ("learning_rate", "--learning-rate"), ("val_folds", "--val-folds"),
                      ("seed", "--seed"), ("steps_per_epoch", "--steps-per-epoch"),
                      ("verbose", "--verbose")):
        if c.get(key) is not None:
            argv += [flag, c[key]]
    ctx.call("vtcaps_tf.crossval", argv + _extra_args(c))
    with open(os.path.join(ctx.output, "report.json")) as f:
        report = json.load(f)
    return {"folds": len(report["folds"]), "mean": report["mean"], "std": report["std"],
            "report": os.path.join(ctx.output, "report.json")}


def run_push(ctx: StepContext) -> dict:
    """Export to the serving base path; the pushed version directory is the step's record."""
    c = ctx.config
    base = c.get("base_path")
    if not base:
        raise ValueError("push needs `base_path` (e.g. saved_models/vtcaps)")
    argv = ["--model", os.path.join(ctx.inputs["Train"], "model.keras"), "--base-path", base]
    if c.get("version") is not None:
        argv += ["--version", c["version"]]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        ctx.call("vtcaps_tf.export", argv)
    printed = buffer.getvalue()
    sys.stdout.write(printed)
    lines = [ln.strip() for ln in printed.splitlines() if ln.strip()]
    version_dir = lines[-1] if lines else ""
    record = {"pushed": version_dir, "base_path": os.path.abspath(base)}
    with open(os.path.join(ctx.output, "pushed.json"), "w") as f:
        json.dump(record, f, indent=2)
    return record


def default_steps(config: dict | None = None) -> list[Step]:
    """ExampleGen -> Statistics -> Validate, then Train -> Evaluate -> Push, or CrossVal when the
    config has a `crossval` section (ExampleGen then writes folds)."""
    if config and "crossval" in config:
        if "train" in config or "evaluate" in config or "push" in config:
            raise ValueError("a config with `crossval` has no train/evaluate/push sections")
        return default_steps()[:3] + [
            Step("CrossVal", run_crossval, "crossval", inputs=("ExampleGen", "Validate"),
                 resumable=True)]
    return [
        Step("ExampleGen", run_example_gen, "example_gen",
             external_inputs=lambda c: [c["input"]] if c.get("input") else []),
        Step("Statistics", run_statistics, "statistics", inputs=("ExampleGen",)),
        Step("Validate", run_validate, "validate", inputs=("ExampleGen", "Statistics")),
        Step("Train", run_train, "train", inputs=("ExampleGen", "Validate")),
        Step("Evaluate", run_evaluate, "evaluate", inputs=("ExampleGen", "Train")),
        Step("Push", run_push, "push", inputs=("Train",), requires_blessing="Evaluate"),
    ]


def load_config(path: str) -> dict:
    if not os.path.exists(path):
        raise FileNotFoundError(f"no pipeline config at {path!r}")
    with open(path) as f:
        if path.endswith((".yaml", ".yml")):
            import yaml  # comes with apache-beam

            config = yaml.safe_load(f)
        else:
            config = json.load(f)
    if not isinstance(config, dict) or "pipeline_root" not in config:
        raise ValueError(f"{path}: a pipeline config is a mapping with at least `pipeline_root`")
    known = {"pipeline_root", "synth", "example_gen", "statistics", "validate", "train", "evaluate",
             "push", "crossval", "about"}
    unknown = set(config) - known
    if unknown:
        raise ValueError(f"{path}: unknown sections {sorted(unknown)}; known: {sorted(known)}")
    return config


def summary_table(results: list[StepResult]) -> str:
    rows = [f"{'step':<11} {'status':<12} {'seconds':>8}"]
    rows += [f"{r.name:<11} {r.status:<12} {r.seconds:>8.1f}" for r in results]
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vtcaps pipeline",
                                description="TFX-style chain ExampleGen -> Statistics -> Validate -> "
                                            "Train -> Evaluate -> Push, with step caching.")
    sub = p.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="run the chain from a config file (JSON or YAML)")
    run.add_argument("--config", required=True, help="pipeline config file")
    run.add_argument("--force", action="store_true", help="run every step, ignoring the cache")
    run.add_argument("--pipeline-root", help="override the config's pipeline_root")
    return p


def cli_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except (OSError, ValueError) as err:
        print(f"vtcaps pipeline: error: {err}", file=sys.stderr)
        return 2
    root = args.pipeline_root or config["pipeline_root"]
    try:
        results = Pipeline(root, default_steps(config), config).run(force=args.force)
    except (PipelineError, ValueError) as err:
        print(f"vtcaps pipeline: {err}", file=sys.stderr)
        return 1
    print(summary_table(results))
    evaluation = next((r.result for r in results if r.name == "Evaluate"), {})
    if evaluation:
        print(f"test accuracy ({evaluation.get('level', 'clip')} level) "
              f"{100 * evaluation['accuracy']:.2f}% (threshold {100 * evaluation['threshold']:.2f}%): "
              f"{'blessed' if evaluation['blessed'] else 'not blessed'}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
