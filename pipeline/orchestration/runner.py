"""The TFX-style chain ExampleGen -> Statistics -> Validate -> Train -> Evaluate -> Push
(`vtcaps pipeline run --config FILE`; its flags are in `vtcaps_tf.cli.pipeline`).

Every step writes its artefacts to `<pipeline_root>/<Step>/output/` and a record of the run to
`<pipeline_root>/<Step>/execution.json`. A step is skipped (cached, as TFX's MLMD cache does) when
its fingerprint is unchanged: the hash of its config section and of its inputs (the upstream
steps' output fingerprints, or for ExampleGen the input data's file list, sizes and times). Push
runs only when Evaluate blessed the model (test accuracy at or above `evaluate.accuracy_threshold`,
clip by clip or, with `evaluate.level: "video"`, video by video),
like TFX's Evaluator blessing.

The steps call the stages' typed Python entry points (`Stages`: preprocess.generate_examples,
fit.run_fn, evaluate.evaluate_model, export.export_trained, crossval.crossval) and hand the
artefacts they return (the examples directory, the model file, the version directory) to the
steps after them; a test passes its own `Stages`. Validate applies one set of thresholds
(`ValidationThresholds`) to the statistics; the schema checks already ran inside ExampleGen.

Each config section is the mapping form of an options dataclass (`SECTIONS`: `example_gen` ->
`ExampleGenOptions`, the options of `vtcaps preprocess` with `beam_args`; `evaluate` ->
`EvaluateStepOptions`; `validate` -> `ValidationThresholds`; `push` -> `PushOptions`; ...).
`load_config` checks every section against its class before any step runs: an unknown key, a
value of the wrong type or a missing required key is refused with `section.key` named.

A config that cannot be used, a missing input, or a step that raises UsageError raise UsageError;
any other step failure, PipelineError.

Config (JSON, or YAML when the file ends in .yaml/.yml):
    {"pipeline_root": "demo_out/pipeline",
     "example_gen": {"source": "synthetic", "input": "demo_out/synth", "preset": "tiny",
                     "beam_args": ["--direct_num_workers", "2"]},
     "statistics": {},
     "validate": {"max_dead_letter_fraction": 0.2, "min_test_subjects": 1},
     "train": {"preset": "tiny", "epochs": 20, "batch_size": 16, "augment": false},
     "evaluate": {"split": "test", "accuracy_threshold": 0.9},
     "push": {"base_path": "saved_models/vtcaps"}}
Relative paths are relative to the current directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from typing import Callable

from vtcaps_tf.config.evaluate import EvaluateStepOptions
from vtcaps_tf.config.presets import DEFAULT_PRESET
from vtcaps_tf.config.options import OptionError, from_mapping, option, to_mapping
from vtcaps_tf.config.preprocess import PreprocessOptions
from vtcaps_tf.config.train_options import CrossvalOptions, TrainConfig
from vtcaps_tf.errors import InputNotFoundError, UsageError
from vtcaps_tf.utils import atomic_files

EXECUTION_FILE = "execution.json"
BLESSING_FILE = "blessing.json"
FINGERPRINT_VERSION = 2  # 2: results carry the artefacts' paths


class PipelineError(RuntimeError):
    """A step failed; the message names it. Steps after it do not run."""


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
    stages: "Stages"  # the entry points the step calls


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


def _generate_examples(output: str, options: PreprocessOptions, beam_args=()) -> str:
    from vtcaps_pipeline.beam import preprocess

    return preprocess.generate_examples(output, options, beam_args)


def _run_fn(fn_args):
    from vtcaps_tf.train import fit

    return fit.run_fn(fn_args)


def _evaluate_model(model_path: str, data_dir: str, split: str, output: str) -> dict:
    from vtcaps_tf.evaluation import evaluate

    report, _ = evaluate.evaluate_model(model_path, data_dir, split, output, verbose=0)
    return report


def _export_trained(model_path: str, base_path: str, version: int | None = None) -> str:
    from vtcaps_tf.export import saved_model as export

    return export.export_trained(model_path, base_path, version)


def _crossval(options: CrossvalOptions) -> dict:
    from vtcaps_tf.train import crossval

    return crossval.crossval(options, log=lambda m: print(m, file=sys.stderr, flush=True))


@dataclasses.dataclass(frozen=True)
class Stages:
    """The typed entry points the steps call (imported on use: TensorFlow loads only when a step
    runs). Each returns the artefact the next steps read."""

    generate_examples: Callable[..., str] = _generate_examples  # (output, PreprocessOptions, beam_args) -> dir
    run_fn: Callable = _run_fn  # (fit.FnArgs) -> TrainResult with .model_path
    evaluate: Callable[..., dict] = _evaluate_model  # (model_path, data_dir, split, output) -> report
    export: Callable[..., str] = _export_trained  # (model_path, base_path, version) -> version dir
    crossval: Callable[..., dict] = _crossval  # (CrossvalOptions) -> summary


class Pipeline:
    """Steps in order; `run()` executes the ones whose fingerprint changed."""

    def __init__(self, root: str, steps: list[Step], config: dict, stages: Stages | None = None,
                 log=None):
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
        self.stages = stages or Stages()
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
        atomic_files.write_json(path, record, default=str)  # a crash leaves no half-written record

    def fingerprint(self, step: Step, upstream: dict) -> str:
        section = self.config.get(step.config_key) or {}
        external = []
        if step.external_inputs is not None:
            for p in step.external_inputs(section):
                if not os.path.exists(p):
                    raise InputNotFoundError(f"{step.name}: no such input {p!r}")
                external.append((p, fingerprint_path(p, content=False)))
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
                              {d: upstream[d]["result"] for d in upstream}, self.stages)
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
                if isinstance(err, UsageError):  # the step's config or input, not its work
                    raise UsageError(f"step {step.name}: {err}") from err
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


# ---- config sections: one options dataclass each ---------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ExampleGenOptions(PreprocessOptions):
    """The `example_gen` section: the options of `vtcaps preprocess` (its output is the step's
    output directory) and the flags the job hands Beam."""

    beam_args: tuple[str, ...] = option((), cli=False,
                                        help="Beam's own flags (--runner, --direct_num_workers, ...)")

    def preprocess_options(self) -> PreprocessOptions:
        return PreprocessOptions(**{f.name: getattr(self, f.name)
                                    for f in dataclasses.fields(PreprocessOptions)})


@dataclasses.dataclass(frozen=True)
class StatisticsOptions:
    """The `statistics` section holds no settings."""


@dataclasses.dataclass(frozen=True)
class PushOptions:
    """The `push` section: where the blessed model is exported for serving."""

    base_path: str = option(help="the serving base path versions go below (saved_models/NAME)")
    version: int | None = option(None, minimum=0,
                                 help="integer version (default: one more than the newest existing one)")

    def __post_init__(self):
        if not self.base_path:
            raise ValueError("base_path must name a folder (e.g. saved_models/vtcaps)")


# The paths a section's options hold that the pipeline decides, not the config (placeholders when
# a config is only checked).
PIPELINE_PATHS = {"train": ("data_dir", "run_dir"), "crossval": ("data_dir", "output")}


def section_options(section: str, mapping, **paths):
    """The options of one config section (`SECTIONS`), checked: an instance of its dataclass. A
    missing section (None) holds the defaults. `paths`: the paths the pipeline gives the section
    (`PIPELINE_PATHS`), placeholders when only checking. Raises OptionError (a UsageError) naming
    `section.key`."""
    mapping = {} if mapping is None else mapping
    if not isinstance(mapping, dict):
        raise OptionError(f"{section}: expected a mapping of options, got {mapping!r}")
    fixed = {key: paths.get(key, "") for key in PIPELINE_PATHS.get(section, ())}
    return from_mapping(SECTIONS[section], mapping, section, **fixed)


# ---- the six TFX-style steps over the vtcaps stages -----------------------------------------------

def run_example_gen(ctx: StepContext) -> dict:
    section = section_options("example_gen", ctx.config)
    examples = ctx.stages.generate_examples(ctx.output, section.preprocess_options(), section.beam_args)
    with open(os.path.join(examples, "metadata.json")) as f:
        meta = json.load(f)
    return {"examples": examples, "counts": meta.get("counts", {}), "classes": meta.get("classes", [])}


def run_statistics(ctx: StepContext) -> dict:
    from vtcaps_pipeline.beam import checks
    from vtcaps_tf.data import features

    examples = ctx.results["ExampleGen"]["examples"]
    splits = features.data_splits(features.read_metadata(examples))
    stats = {split: checks.split_statistics(examples, split) for split in splits}
    for s in stats.values():  # sets of ids are for validation, not for the report
        s["label_ids"] = {k: sorted(v) for k, v in s["label_ids"].items()}
    gen_stats_path = os.path.join(examples, features.STATS_FILE)
    job = {}
    if os.path.exists(gen_stats_path):
        with open(gen_stats_path) as f:
            job = json.load(f)
    # The job's own counts: `videos` (listed, written, dead letters) whatever the runner reports;
    # `counters` only when the runner reports metrics.
    report = {"splits": stats, "videos": job.get("videos"), "dead_letters": job.get("dead_letters"),
              "counters": job.get("counters") or {}}
    path = os.path.join(ctx.output, "statistics.json")
    atomic_files.write_json(path, report, default=list)
    return {"statistics": path,
            **{split: {"clips": s["clips"], "subjects": len(s["subjects"])} for split, s in stats.items()}}


@dataclasses.dataclass(frozen=True)
class ValidationThresholds:
    """The one set of anomaly thresholds (TFX ExampleValidator): the `validate` section. Schema
    and decoding checks are ExampleGen's own (pipeline/beam/checks.py): it fails when they do."""

    max_dead_letter_fraction: float = option(
        0.2, minimum=0.0, help="the largest share of the videos listed that may give no clip")
    min_test_subjects: int = option(1, minimum=0, help="subjects at least in the test split, or in every fold")


def find_anomalies(stats: dict, meta: dict, thresholds: ValidationThresholds) -> list[str]:
    """Problems of a Statistics report against `thresholds`; empty when there are none."""
    problems = []
    folds = bool(meta.get("folds"))
    # Cross-validation folds are each a test set; a fold may lack a rare class (CK+'s contempt).
    for split in ([] if folds else ["train", "test"]):
        per_class = stats["splits"][split]["clips_per_class"]
        missing = [c for c in meta["classes"] if not per_class.get(c)]
        if missing:
            problems.append(f"{split} split has no clip of {missing}")
    for split in (list(stats["splits"]) if folds else ["test"]):
        have = len(stats["splits"][split]["subjects"])
        if have < thresholds.min_test_subjects:
            problems.append(f"{split} holds {have} test subjects, fewer than "
                            f"min_test_subjects={thresholds.min_test_subjects}")
    # Dead letters over the videos the source listed: every listed video is written or a dead
    # letter, unreadable ones included, and both counts are the job's own (stats.json), present
    # whether or not the runner reports metrics.
    listed = (stats.get("videos") or {}).get("listed")
    dead_letters = stats.get("dead_letters")
    limit = thresholds.max_dead_letter_fraction
    if not isinstance(listed, int) or not isinstance(dead_letters, dict):
        problems.append("the statistics hold no count of the videos listed or of the dead letters "
                        "(ExampleGen's stats.json): the dead-letter fraction cannot be checked")
    else:
        dead = sum(dead_letters.values())
        if dead > listed:
            problems.append(f"{dead} dead letters but {listed} videos listed: the counts disagree")
        elif listed and dead / listed > limit:
            problems.append(f"{dead} of {listed} videos gave no clip (limit {limit:.0%})")
    return problems


def run_validate(ctx: StepContext) -> dict:
    """Anomaly checks on the statistics (TFX ExampleValidator): a problem stops the pipeline."""
    from vtcaps_tf.data import features

    thresholds = section_options("validate", ctx.config)
    meta = features.read_metadata(ctx.results["ExampleGen"]["examples"])
    with open(ctx.results["Statistics"]["statistics"]) as f:
        stats = json.load(f)
    problems = find_anomalies(stats, meta, thresholds)
    atomic_files.write_json(os.path.join(ctx.output, "anomalies.json"),
                            {"problems": problems, "thresholds": to_mapping(thresholds)})
    if problems:
        raise ValueError("validation found anomalies:\n  - " + "\n  - ".join(problems))
    return {"problems": 0}


def run_train(ctx: StepContext) -> dict:
    from vtcaps_tf.data import features
    from vtcaps_tf.train.fit import FnArgs

    examples = ctx.results["ExampleGen"]["examples"]
    config = section_options("train", ctx.config, data_dir=examples, run_dir=ctx.output)
    fn_args = FnArgs(train_files=features.split_files(examples, "train"),
                     eval_files=features.split_files(examples, "val"), model_run_dir=ctx.output,
                     custom_config={"data_dir": examples, **to_mapping(config)})
    result = ctx.stages.run_fn(fn_args)
    if not os.path.exists(result.model_path):
        raise FileNotFoundError(f"training wrote no {result.model_path}")
    return {"model": result.model_path, "logdir": os.path.join(ctx.output, "logs")}


def run_evaluate(ctx: StepContext) -> dict:
    options = section_options("evaluate", ctx.config)
    split, threshold, level = options.split, options.accuracy_threshold, options.level
    report = ctx.stages.evaluate(ctx.results["Train"]["model"], ctx.results["ExampleGen"]["examples"],
                                 split, ctx.output)
    video = report.get("video") or {}
    judged = video if level == "video" else report
    blessed = bool(judged["accuracy"] >= threshold)
    blessing = {"blessed": blessed, "level": level, "accuracy": judged["accuracy"],
                "threshold": threshold, "split": split, "clip_accuracy": report["accuracy"],
                "video_accuracy": video.get("accuracy")}
    atomic_files.write_json(os.path.join(ctx.output, BLESSING_FILE), blessing)
    return {**blessing, "macro_f1": judged.get("macro_f1"),
            "report": os.path.join(ctx.output, "report.json"),
            "confusion_matrix": os.path.join(ctx.output, "confusion_matrix.png")}


def run_crossval(ctx: StepContext) -> dict:
    """K-fold cross-validation on ExampleGen's folds (`vtcaps crossval`); resumes its folds."""
    options = section_options("crossval", ctx.config, data_dir=ctx.results["ExampleGen"]["examples"],
                              output=ctx.output)
    summary = ctx.stages.crossval(options)
    return {"folds": len(summary["folds"]), "mean": summary["mean"], "std": summary["std"],
            "report": os.path.join(ctx.output, "report.json")}


def run_push(ctx: StepContext) -> dict:
    """Export to the serving base path; the pushed version directory is the step's record."""
    options = section_options("push", ctx.config)
    base = options.base_path
    version_dir = ctx.stages.export(ctx.results["Train"]["model"], base, options.version)
    print(version_dir)
    record = {"pushed": version_dir, "base_path": os.path.abspath(base)}
    atomic_files.write_json(os.path.join(ctx.output, "pushed.json"), record)
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
    """The pipeline config at `path` (JSON, or YAML for .yaml/.yml), every section checked against
    its options (`SECTIONS`) before any step runs. Raises UsageError naming the file and, for a
    refused value, `section.key`."""
    if not os.path.exists(path):
        raise InputNotFoundError(f"no pipeline config at {path!r}")
    with open(path) as f:
        if path.endswith((".yaml", ".yml")):
            import yaml  # comes with apache-beam

            try:
                config = yaml.safe_load(f)
            except yaml.YAMLError as err:
                raise UsageError(f"{path}: not valid YAML: {err}") from None
        else:
            try:
                config = json.load(f)
            except json.JSONDecodeError as err:
                raise UsageError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(config, dict) or "pipeline_root" not in config:
        raise UsageError(f"{path}: a pipeline config is a mapping with at least `pipeline_root`")
    known = set(SECTIONS) | set(OTHER_SECTIONS)
    unknown = set(config) - known
    if unknown:
        raise UsageError(f"{path}: unknown sections {sorted(unknown)}; known: {sorted(known)}")
    for section in SECTIONS:
        if section in config:
            try:
                section_options(section, config[section])
            except ValueError as err:  # OptionError
                raise UsageError(f"{path}: {err}") from None
    return config


# Config section -> the options dataclass its keys, types and rules come from.
SECTIONS: dict[str, type] = {
    "example_gen": ExampleGenOptions,
    "statistics": StatisticsOptions,
    "validate": ValidationThresholds,
    "train": TrainConfig,
    "evaluate": EvaluateStepOptions,
    "push": PushOptions,
    "crossval": CrossvalOptions,
}
# Sections no step reads: the root folder, the settings of `vtcaps demo`'s synthetic set, notes.
OTHER_SECTIONS = ("pipeline_root", "synth", "about")


def summary_table(results: list[StepResult]) -> str:
    rows = [f"{'step':<11} {'status':<12} {'seconds':>8}"]
    rows += [f"{r.name:<11} {r.status:<12} {r.seconds:>8.1f}" for r in results]
    return "\n".join(rows)


def evaluation_line(results: list[StepResult]) -> str | None:
    """Evaluate's accuracy, threshold and blessing in one line; None when it did not run."""
    evaluation = next((r.result for r in results if r.name == "Evaluate"), {})
    if not evaluation:
        return None
    return (f"test accuracy ({evaluation.get('level', 'clip')} level) "
            f"{100 * evaluation['accuracy']:.2f}% (threshold {100 * evaluation['threshold']:.2f}%): "
            f"{'blessed' if evaluation['blessed'] else 'not blessed'}")
