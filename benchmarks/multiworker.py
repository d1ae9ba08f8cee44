"""Multi-worker training on one machine: 1 worker vs 2 workers on loopback, in one run.

For each cluster size, `vtcaps train --local-workers N` trains the preset (same data, global batch,
seed) and the chief's last epoch line gives clips/s (the first epoch includes tracing and is
left out); then `--allreduce` workers time the collective step alone: one all-reduce of tensors
shaped like the model's trainable variables (what Keras' optimizer sends every step), under the
same MultiWorkerMirroredStrategy. Prints one JSON line.

    python benchmarks/multiworker.py [--preset tiny] [--steps 4] [--epochs 2]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.matmul import matmul_gflops  # noqa: E402


def allreduce_worker(preset: str, repeats: int) -> None:
    """Run under TF_CONFIG: time the gradient all-reduce of `preset`; the chief prints JSON."""
    from vtcaps_tf.train import multiworker

    task, workers = multiworker.cluster_spec()
    multiworker.configure_threads()
    strategy = multiworker.make_strategy()
    import tensorflow as tf

    from vtcaps_tf.models import build_model

    with strategy.scope():
        model = build_model(preset, class_names=["a", "b", "c"])
    shapes = [tuple(v.shape) for v in model.trainable_variables]
    grads = [tf.ones(s, tf.float32) for s in shapes]

    @tf.function
    def step():
        def replica():
            ctx = tf.distribute.get_replica_context()
            return ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        return strategy.run(replica)

    step()
    step()
    start = time.perf_counter()
    for _ in range(repeats):
        out = step()
    # The values are waited for: the all-reduce is done when its first output is.
    float(tf.reduce_sum(tf.nest.flatten(out)[0]))
    ms = 1000 * (time.perf_counter() - start) / repeats
    if task == 0:
        n = sum(int(tf.size(g)) for g in grads)
        print("ALLREDUCE " + json.dumps({"workers": workers, "params": n, "ms": round(ms, 2)}),
              flush=True)


def _train(data, workers, preset, steps, epochs, batch):
    from vtcaps_tf.train import local_cluster

    run_dir = tempfile.mkdtemp(prefix=f"mw{workers}-")
    out, err = io.StringIO(), io.StringIO()
    argv = ["--data", data, "--run-dir", run_dir, "--preset", preset, "--epochs", str(epochs),
            "--batch-size", str(batch), "--steps-per-epoch", str(steps), "--no-augment"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    start = time.perf_counter()
    code = local_cluster.launch("vtcaps_tf.cli.main", ["train", *argv], workers, env=env, out=out,
                                err=err)
    wall = time.perf_counter() - start
    if code:
        raise RuntimeError(f"{workers} worker(s) failed:\n{err.getvalue()[-3000:]}")
    lines = re.findall(r"Epoch (\d+)/\d+: \d+ steps in ([\d.]+)s \(([\d.]+) clips/s\)", out.getvalue())
    last = lines[-1]
    return {"clips_per_s": float(last[2]), "epoch_s": float(last[1]), "wall_s": round(wall, 1),
            "first_epoch_s": float(lines[0][1])}


def _allreduce(workers, preset, repeats):
    from vtcaps_tf.train import local_cluster

    out, err = io.StringIO(), io.StringIO()
    env = dict(os.environ, PYTHONPATH=ROOT)
    code = local_cluster.launch("benchmarks.multiworker",
                                ["--allreduce-worker", "--preset", preset, "--repeats", str(repeats)],
                                workers, env=env, out=out, err=err)
    if code:
        raise RuntimeError(f"all-reduce with {workers} worker(s) failed:\n{err.getvalue()[-3000:]}")
    line = next(l for l in out.getvalue().splitlines() if "ALLREDUCE " in l)
    return json.loads(line.split("ALLREDUCE ", 1)[1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--steps", type=int, default=4, help="steps per epoch")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=20, help="timed all-reduces")
    p.add_argument("--allreduce-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--multi-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.allreduce_worker:
        allreduce_worker(args.preset, args.repeats)
        return 0

    from tests.data.fixtures import write_dataset

    gflops = matmul_gflops()
    data = write_dataset(tempfile.mkdtemp(prefix="mwdata-"),
                         counts={"train": args.batch_size * args.steps}, shards=2)
    result = {"benchmark": "multiworker", "preset": args.preset, "cpus": os.cpu_count(),
              "global_batch": args.batch_size, "steps_per_epoch": args.steps}
    for n in (1, 2):
        train = _train(data, n, args.preset, args.steps, args.epochs, args.batch_size)
        ar = _allreduce(n, args.preset, args.repeats)
        print(f"{n} worker(s): {train}, all-reduce {ar}", file=sys.stderr, flush=True)
        result[f"workers{n}"] = {**train, "allreduce_ms": ar["ms"]}
        result["params"] = ar["params"]
    one, two = result["workers1"], result["workers2"]
    result["speedup_2_vs_1"] = round(two["clips_per_s"] / one["clips_per_s"], 3)
    step_2 = args.batch_size / two["clips_per_s"]
    result["allreduce_share_of_step_2_workers"] = round(two["allreduce_ms"] / 1000 / step_2, 4)
    result["matmul_2048_gflops"] = round(gflops, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
