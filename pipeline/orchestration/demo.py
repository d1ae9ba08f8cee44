"""The whole system on a synthetic expression set (`make demo`, `vtcaps demo`; its flags are in
`vtcaps_tf.cli.demo`, its options `DemoOptions`, its entry point `run_demo`).

synth -> the TFX-style chain of `pipeline/orchestration/configs/demo.json` (ExampleGen = the Beam
job, Statistics, Validate, Train, Evaluate, Push = export to saved_models/vtcaps/) -> `vtcaps serve`
in a subprocess -> `vtcaps predict` over REST on held-out synthetic videos (new subjects, another
seed) -> a results table of what was measured: every stage's time, the test accuracy against the
config's own blessing threshold, the held-out REST accuracy, and the matmul figure of the same run
with the kernels it used -> the server is stopped.

A synthetic set already in the working directory is reused only when its manifest records the
settings asked for now; otherwise it is made again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Callable

from vtcaps_tf.utils import machine

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "demo.json")
# Held-out videos per class and subjects when the config's synth section does not say.
HELDOUT_PER_CLASS = HELDOUT_SUBJECTS = 2
HELDOUT_SEED_OFFSET = 1000  # the held-out set's seed: the training set's plus this (new identities)


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    output: str = "demo_out"  # working directory
    config: str = DEFAULT_CONFIG  # pipeline config with a `synth` section
    base_path: str = "saved_models/vtcaps"  # export base path
    per_class: int | None = None  # synthetic videos per class; None: the config's
    subjects: int | None = None  # synthetic subjects; None: the config's
    epochs: int | None = None  # training epochs; None: the config's
    seed: int = 0
    force: bool = False  # rerun every pipeline step and remake the synthetic sets


@dataclasses.dataclass
class DemoResult:
    report: dict  # Evaluate's report (vtcaps_tf.evaluation)
    blessing: dict  # Evaluate's step result: accuracy, threshold, level, blessed
    stage_seconds: dict[str, float]
    notes: dict[str, str]  # further lines of the results table
    ok: bool  # blessed, pushed, served, and predicted over REST


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(base_path: str, model_name: str, timeout: float = 300.0):
    """`vtcaps serve` as a subprocess on a free port; returns (process, REST url) once it is ready."""
    port = _free_port()
    cmd = [sys.executable, "-m", "vtcaps_tf.cli.main", "serve", "--model-base-path", base_path,
           "--model-name", model_name, "--rest-port", str(port), "--grpc-port", "0",
           "--file-system-poll-wait-seconds", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vtcaps serve exited with {proc.returncode}:\n{proc.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/v1/models/{model_name}", timeout=2) as r:
                status = json.load(r)
            states = [v.get("state") for v in status.get("model_version_status", [])]
            if "AVAILABLE" in states:
                return proc, url
        except OSError:
            pass
        time.sleep(1.0)
    stop_server(proc)
    raise RuntimeError(f"vtcaps serve did not report the model AVAILABLE within {timeout:.0f} s")


def stop_server(proc: subprocess.Popen):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def predict_accuracy(predictions: list[dict], manifest: dict) -> tuple[float, int]:
    """Share of held-out videos whose predicted emotion (mean over clips) is their label."""
    label = {os.path.normpath(v["path"]): v["label"] for v in manifest["videos"]}
    hits = total = 0
    for p in predictions:
        rel = os.path.normpath(os.path.join(os.path.basename(os.path.dirname(p["video"])),
                                            os.path.basename(p["video"])))
        if rel in label and "emotion" in p:
            total += 1
            hits += p["emotion"] == label[rel]
    return (hits / total if total else float("nan")), total


def results_table(result: DemoResult) -> str:
    report, blessing = result.report, result.blessing
    lines = ["", "=" * 64, "vtcaps demo: results", "=" * 64,
             f"test split accuracy (held-out subjects): {100 * report['accuracy']:.2f}%  "
             f"({report['num_samples']} clips)",
             f"UAR {100 * report['uar']:.2f}%   macro F1 {100 * report['macro_f1']:.2f}%",
             f"blessing: {blessing['level']} accuracy {100 * blessing['accuracy']:.2f}% against the "
             f"config's threshold {100 * blessing['threshold']:.2f}%: "
             + ("blessed" if blessing["blessed"] else "not blessed"), "",
             f"{'class':<16}{'precision':>10}{'recall':>10}{'F1':>10}{'clips':>8}"]
    for name in report["classes"]:
        c = report["per_class"][name]
        lines.append(f"{name:<16}{100 * c['precision']:>10.2f}{100 * c['recall']:>10.2f}"
                     f"{100 * c['f1']:>10.2f}{c['support']:>8}")
    lines += ["", *[f"{k}: {v}" for k, v in result.notes.items()], "", f"{'stage':<28}{'seconds':>10}"]
    lines += [f"{k:<28}{v:>10.1f}" for k, v in result.stage_seconds.items()]
    lines += [f"{'total':<28}{sum(result.stage_seconds.values()):>10.1f}", "=" * 64]
    return "\n".join(lines)


def _synth_set(render, output: str, seed: int, section: dict, per_class, subjects):
    """The SynthConfig of one set: the section's frames and size (SynthConfig's defaults where it
    has none), `per_class` and `subjects`."""
    shape = {k: section[k] for k in ("frames", "size") if k in section}
    sizes = {k: v for k, v in (("per_class", per_class), ("subjects", subjects)) if v is not None}
    return render.SynthConfig(output=output, seed=seed, **shape, **sizes)


def make_or_reuse_set(render, config, force: bool, say: Callable[[str], None]) -> dict:
    """The manifest of the set `config` describes: reused when its manifest records the same
    settings, made otherwise (a set made with other settings is removed first)."""
    manifest = render.read_manifest(config.output)
    if not force and render.matches(config, manifest):
        say(f"synth: reusing {config.output} (made with the same settings)")
        return manifest
    if manifest is not None:
        say(f"synth: {config.output} was made with other settings; making it again")
        shutil.rmtree(config.output)
    return render.generate(config)


def _to_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_demo(options: DemoOptions, say: Callable[[str], None] = _to_stderr) -> DemoResult:
    """The demo (module docstring); `say` gets the stage lines. A config that cannot be used
    raises UsageError; a pipeline step that fails, runner.PipelineError."""
    from vtcaps_pipeline.orchestration import runner
    from vtcaps_pipeline.synth import render

    config = runner.load_config(options.config)
    synth_section = config.pop("synth", {}) or {}
    out = os.path.abspath(options.output)
    os.makedirs(out, exist_ok=True)
    times: dict[str, float] = {}
    gflops_start = machine.matmul_gflops()
    say(f"matmul (2048^2 fp32, numpy): {gflops_start:.1f} GFLOP/s, {machine.describe()}")

    def timed(name, fn):
        say(f"\n== {name}")
        start = time.monotonic()
        value = fn()
        times[name] = time.monotonic() - start
        say(f"== {name}: {times[name]:.1f} s")
        return value

    train_set = _synth_set(render, os.path.join(out, "synth"), options.seed, synth_section,
                           options.per_class or synth_section.get("per_class"),
                           options.subjects or synth_section.get("subjects"))
    heldout = _synth_set(render, os.path.join(out, "heldout"), options.seed + HELDOUT_SEED_OFFSET,
                         synth_section, synth_section.get("heldout_per_class", HELDOUT_PER_CLASS),
                         synth_section.get("heldout_subjects", HELDOUT_SUBJECTS))
    timed("synth", lambda: make_or_reuse_set(render, train_set, options.force, say))
    heldout_manifest = timed("synth (held-out videos)",
                             lambda: make_or_reuse_set(render, heldout, options.force, say))

    config["pipeline_root"] = os.path.join(out, "pipeline")
    config.setdefault("example_gen", {})["input"] = train_set.output
    config.setdefault("push", {})["base_path"] = os.path.abspath(options.base_path)
    if options.epochs:
        config.setdefault("train", {})["epochs"] = options.epochs
    pipe = runner.Pipeline(config["pipeline_root"], runner.default_steps(config), config)
    results = pipe.run(force=options.force)
    for r in results:
        times[f"pipeline: {r.name} ({r.status})"] = r.seconds
    by_name = {r.name: r for r in results}
    with open(by_name["Evaluate"].result["report"]) as f:
        report = json.load(f)
    notes = {"confusion matrix": by_name["Evaluate"].result["confusion_matrix"],
             "TensorBoard": f"tensorboard --logdir {by_name['Train'].result['logdir']}",
             "pipeline root": config["pipeline_root"]}
    result = DemoResult(report, by_name["Evaluate"].result, times, notes, ok=False)
    if by_name["Push"].status == "not_blessed":
        notes["push"] = "not pushed: the model was not blessed"
        return result
    notes["exported"] = by_name["Push"].result.get("pushed") or options.base_path

    from vtcaps_tf.apps.client import ServingClientError
    from vtcaps_tf.apps.options import ModelSource, PredictOptions
    from vtcaps_tf.apps.predict import predict_paths, write_results

    model_name = os.path.basename(os.path.normpath(options.base_path))
    proc, url = timed("serve (start, load model)",
                      lambda: start_server(os.path.abspath(options.base_path), model_name))
    pred_path = os.path.join(out, "predictions.json")
    # One subject per held-out video: score its largest face only.
    predict_options = PredictOptions(ModelSource(server=url, name=model_name), faces="largest",
                                     format="json", output=pred_path,
                                     plot=os.path.join(out, "timelines.png"))
    videos = [os.path.join(heldout.output, v["path"]) for v in heldout_manifest["videos"]]
    try:
        predicted = timed("predict over REST", lambda: predict_paths(videos, predict_options))
        write_results(predicted, predict_options)
    except (ServingClientError, OSError) as err:
        notes["REST predictions"] = f"failed: {type(err).__name__}: {err}"
        predicted = []
    finally:
        timed("serve (stop)", lambda: stop_server(proc))
    if predicted:
        with open(pred_path) as f:
            acc, n = predict_accuracy(json.load(f), heldout_manifest)
        notes["REST predictions"] = (f"{100 * acc:.2f}% of {n} held-out videos (new subjects, seed "
                                     f"{heldout.seed}) -> {pred_path}")
    notes["machine"] = (f"matmul (2048^2 fp32) {gflops_start:.1f} GFLOP/s at the start, "
                        f"{machine.matmul_gflops():.1f} at the end; {machine.describe()}")
    result.ok = any(r.ok for r in predicted)
    return result
