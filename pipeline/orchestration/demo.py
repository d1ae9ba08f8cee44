"""`make demo` (`vtcaps demo`): the whole system on a synthetic expression set.

synth -> the TFX-style chain of `pipeline/orchestration/configs/demo.json` (ExampleGen = the Beam job,
Statistics, Validate, Train, Evaluate, Push = export to saved_models/vtcaps/) -> `vtcaps serve` in a
subprocess -> `vtcaps predict --server` over REST on held-out synthetic videos (new subjects,
another seed) -> a results table with every stage's time -> the server is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

from vtcaps_tf.utils import machine

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "demo.json")


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


def results_table(report: dict, stage_seconds: dict, extra: dict) -> str:
    lines = ["", "=" * 64, "vtcaps demo: results", "=" * 64,
             f"test split accuracy (held-out subjects): {100 * report['accuracy']:.2f}%  "
             f"({report['num_samples']} clips; goal >= 90%)",
             f"UAR {100 * report['uar']:.2f}%   macro F1 {100 * report['macro_f1']:.2f}%", "",
             f"{'class':<16}{'precision':>10}{'recall':>10}{'F1':>10}{'clips':>8}"]
    for name in report["classes"]:
        c = report["per_class"][name]
        lines.append(f"{name:<16}{100 * c['precision']:>10.2f}{100 * c['recall']:>10.2f}"
                     f"{100 * c['f1']:>10.2f}{c['support']:>8}")
    lines += ["", *[f"{k}: {v}" for k, v in extra.items()], "", f"{'stage':<28}{'seconds':>10}"]
    lines += [f"{k:<28}{v:>10.1f}" for k, v in stage_seconds.items()]
    lines += [f"{'total':<28}{sum(stage_seconds.values()):>10.1f}", "=" * 64]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vtcaps demo", description=__doc__.splitlines()[0])
    p.add_argument("--output", default="demo_out", help="working directory (default %(default)s)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="pipeline config (default pipeline/orchestration/configs/demo.json)")
    p.add_argument("--base-path", default="saved_models/vtcaps", help="export base path (default %(default)s)")
    p.add_argument("--per-class", type=int, default=None, help="videos per class (default: the config's synth section)")
    p.add_argument("--subjects", type=int, default=None, help="synthetic subjects (default: the config's)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the config's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="rerun every pipeline step (no cache)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Imported here so that `vtcaps demo --help` answers without TensorFlow.
    from vtcaps_pipeline.orchestration import runner
    from vtcaps_pipeline.synth import render as synth

    with open(args.config) as f:
        config = json.load(f)
    synth_cfg = config.pop("synth", {})
    out = os.path.abspath(args.output)
    os.makedirs(out, exist_ok=True)
    times: dict[str, float] = {}
    gflops = machine.matmul_gflops()
    print(f"machine speed: 2048^2 fp32 matmul {gflops:.1f} GFLOP/s, {machine.describe()} (the demo's times "
          f"scale with it; slowest machine of this kind: {machine.SLOW_MACHINE_GFLOPS:.0f})", file=sys.stderr, flush=True)

    def timed(name, fn):
        print(f"\n== {name}", file=sys.stderr, flush=True)
        start = time.monotonic()
        value = fn()
        times[name] = time.monotonic() - start
        print(f"== {name}: {times[name]:.1f} s", file=sys.stderr, flush=True)
        return value

    common = dict(frames=synth_cfg.get("frames", 32), size=synth_cfg.get("size", 128))
    train_set = synth.SynthConfig(
        output=os.path.join(out, "synth"), seed=args.seed,
        per_class=args.per_class or synth_cfg.get("per_class", 12),
        subjects=args.subjects or synth_cfg.get("subjects", 10), **common)
    # Held-out videos for `vtcaps predict`: another seed, so new identities and new clips.
    heldout = synth.SynthConfig(output=os.path.join(out, "heldout"), seed=args.seed + 1000,
                                per_class=synth_cfg.get("heldout_per_class", 2),
                                subjects=synth_cfg.get("heldout_subjects", 2), **common)
    manifest_path = os.path.join(train_set.output, "manifest.json")
    if not os.path.exists(manifest_path) or args.force:
        timed("synth", lambda: synth.generate(train_set))
    else:
        print(f"synth: reusing {train_set.output}", file=sys.stderr)
        times["synth"] = 0.0
    heldout_manifest = timed("synth (held-out videos)", lambda: synth.generate(heldout, progress=False))

    config["pipeline_root"] = os.path.join(out, "pipeline")
    config.setdefault("example_gen", {})["input"] = train_set.output
    config.setdefault("push", {})["base_path"] = os.path.abspath(args.base_path)
    if args.epochs:
        config.setdefault("train", {})["epochs"] = args.epochs
    pipe = runner.Pipeline(config["pipeline_root"], runner.default_steps(), config)
    try:
        results = pipe.run(force=args.force)
    except runner.PipelineError as err:
        print(f"demo: {err}", file=sys.stderr)
        return 1
    for r in results:
        times[f"pipeline: {r.name} ({r.status})"] = r.seconds
    by_name = {r.name: r for r in results}
    with open(by_name["Evaluate"].result["report"]) as f:
        report = json.load(f)
    extra = {"confusion matrix": by_name["Evaluate"].result["confusion_matrix"],
             "TensorBoard": f"tensorboard --logdir {by_name['Train'].result['logdir']}",
             "pipeline root": config["pipeline_root"]}
    if by_name["Push"].status == "not_blessed":
        extra["push"] = (f"not pushed: accuracy below the blessing threshold "
                         f"{config['evaluate'].get('accuracy_threshold')}")
        print(results_table(report, times, extra))
        return 1
    extra["exported"] = by_name["Push"].result.get("pushed") or args.base_path

    model_name = os.path.basename(os.path.normpath(args.base_path))
    proc, url = timed("serve (start, load model)", lambda: start_server(os.path.abspath(args.base_path), model_name))
    try:
        from vtcaps_tf.apps import predict

        pred_path = os.path.join(out, "predictions.json")
        videos = [os.path.join(heldout.output, v["path"]) for v in heldout_manifest["videos"]]
        code = timed("predict over REST", lambda: predict.cli_main(
            # One subject per held-out video: score its largest face only.
            videos + ["--server", url, "--model-name", model_name, "--format", "json", "--faces", "largest",
                      "--output", pred_path, "--plot", os.path.join(out, "timelines.png"), "-q"]))
    finally:
        timed("serve (stop)", lambda: stop_server(proc))
    if code == 0:
        with open(pred_path) as f:
            acc, n = predict_accuracy(json.load(f), heldout_manifest)
        extra["REST predictions"] = (f"{100 * acc:.2f}% of {n} held-out videos (new subjects, seed "
                                     f"{heldout.seed}) -> {pred_path}")
    else:
        extra["REST predictions"] = f"vtcaps predict exited with {code}"
    total = sum(times.values())
    extra["machine"] = (f"matmul {gflops:.1f} GFLOP/s at the start, {machine.matmul_gflops():.1f} at the "
                        f"end; the {total / 60:.1f} min of these stages would take about "
                        f"{machine.scaled_to_slow_machine(total, gflops) / 60:.1f} min at "
                        f"{machine.SLOW_MACHINE_GFLOPS:.0f} GFLOP/s")
    print(results_table(report, times, extra))
    return 0 if code == 0 else 1


cli_main = main  # the `vtcaps demo` entry point


if __name__ == "__main__":
    sys.exit(main())
