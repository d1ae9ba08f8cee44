"""Vectorised `DigitCaps` routing against straightforward per-capsule Python loops, same run.

Paper sizes: 1152 input capsules of 8D -> 7 output capsules of 16D, 3 routing iterations, batch 16.
Both loop versions compute exactly the routing of docs/design.md section 6 with TensorFlow ops, eagerly
like the layer call they are compared with:
  * `pair_loop`: a Python loop over every (input capsule, output capsule) pair for the votes, the
    weighted sums and the agreements; the coupling softmax per input capsule;
  * `output_loop`: a Python loop over the 7 output capsules, each vectorised over its inputs.
The median of several interleaved repeats is reported. For reference, the vectorised layer and the
output loop are also timed inside `tf.function` (graph mode, as `fit` and serving run them; the
pair loop would trace ~60k ops and is left out there). Prints one JSON line.

    python benchmarks/routing.py [--batch 16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _squash(tf, s):
    sq = tf.reduce_sum(tf.square(s), axis=-1, keepdims=True)
    return sq / (1.0 + sq) * s / tf.sqrt(sq + 1e-7)


def pair_loop_routing(tf, u, w, iterations):
    """u [B, n_in, d_in], w [n_in, n_out, d_in, d_out] -> v [B, n_out, d_out], one pair at a time."""
    n_in, n_out = w.shape[0], w.shape[1]
    votes = [[tf.matmul(u[:, i, :], w[i, j]) for j in range(n_out)] for i in range(n_in)]
    logits = [[tf.zeros((u.shape[0],)) for _ in range(n_out)] for _ in range(n_in)]
    for r in range(iterations):
        coupling = [tf.unstack(tf.nn.softmax(tf.stack(logits[i], axis=-1), axis=-1), axis=-1)
                    for i in range(n_in)]
        v = []
        for j in range(n_out):
            s = coupling[0][j][:, None] * votes[0][j]
            for i in range(1, n_in):
                s = s + coupling[i][j][:, None] * votes[i][j]
            v.append(_squash(tf, s))
        if r < iterations - 1:
            logits = [[logits[i][j] + tf.reduce_sum(votes[i][j] * v[j], axis=-1)
                       for j in range(n_out)] for i in range(n_in)]
    return tf.stack(v, axis=1)


def output_loop_routing(tf, u, w, iterations):
    """The same routing, a Python loop over output capsules, each vectorised over its inputs."""
    n_out = w.shape[1]
    votes = [tf.einsum("bid,ide->bie", u, w[:, j]) for j in range(n_out)]  # each [B, n_in, d_out]
    logits = [tf.zeros(votes[j].shape[:2]) for j in range(n_out)]
    for r in range(iterations):
        coupling = tf.unstack(tf.nn.softmax(tf.stack(logits, axis=-1), axis=-1), axis=-1)
        v = [_squash(tf, tf.reduce_sum(coupling[j][..., None] * votes[j], axis=1))
             for j in range(n_out)]
        if r < iterations - 1:
            logits = [logits[j] + tf.reduce_sum(votes[j] * v[j][:, None, :], axis=-1)
                      for j in range(n_out)]
    return tf.stack(v, axis=1)


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    _ = out.numpy()  # wait for the result
    return time.perf_counter() - start, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pair-repeats", type=int, default=2,
                        help="repeats of the (slow) pair loop")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from vtcaps_tf.layers.capsules import DigitCaps, squash

    n_in, d_in, n_out, d_out, iterations = 1152, 8, 7, 16, 3
    rng = np.random.default_rng(0)
    u = squash(tf.constant(rng.normal(size=(args.batch, n_in, d_in)), tf.float32))
    layer = DigitCaps(num_capsules=n_out, capsule_dim=d_out, routing_iterations=iterations)
    layer.build((None, n_in, d_in))
    w = tf.constant(rng.normal(scale=0.05, size=(n_in, n_out, d_in, d_out)), tf.float32)
    layer.kernel.assign(w)

    vec_graph = tf.function(layer)
    out_graph = tf.function(lambda x: output_loop_routing(tf, x, w, iterations))
    # Warm-up: first calls pay for kernel selection and tracing.
    layer(u)
    output_loop_routing(tf, u, w, iterations)
    vec_graph(u)
    out_graph(u)

    vec, out_loop, pair, vec_g, out_g = [], [], [], [], []
    results = {}
    for k in range(max(args.repeats, args.pair_repeats)):
        if k < args.repeats:
            t, results["vectorised"] = _timed(lambda: layer(u))
            vec.append(t)
            t, results["output_loop"] = _timed(lambda: output_loop_routing(tf, u, w, iterations))
            out_loop.append(t)
            vec_g.append(_timed(lambda: vec_graph(u))[0])
            out_g.append(_timed(lambda: out_graph(u))[0])
        if k < args.pair_repeats:
            t, results["pair_loop"] = _timed(lambda: pair_loop_routing(tf, u, w, iterations))
            pair.append(t)

    v = results["vectorised"].numpy()
    vec_s, out_s, pair_s, vec_gs, out_gs = (statistics.median(x)
                                            for x in (vec, out_loop, pair, vec_g, out_g))
    print(json.dumps({
        "benchmark": "routing",
        "shape": f"{args.batch}x{n_in}x{d_in} -> {n_out}x{d_out}, {iterations} iterations",
        "device": "GPU" if tf.config.list_logical_devices("GPU") else "CPU",
        "vectorised_s": round(vec_s, 5),
        "pair_loop_s": round(pair_s, 4),
        "speedup": round(pair_s / vec_s, 1),
        "max_abs_diff": float(np.abs(results["pair_loop"].numpy() - v).max()),
        "output_loop_s": round(out_s, 5),
        "speedup_vs_output_loop": round(out_s / vec_s, 2),
        "max_abs_diff_output_loop": float(np.abs(results["output_loop"].numpy() - v).max()),
        "vectorised_graph_s": round(vec_gs, 5),
        "output_loop_graph_s": round(out_gs, 5),
        "speedup_vs_output_loop_graph": round(out_gs / vec_gs, 2),
        "repeats": args.repeats, "pair_repeats": args.pair_repeats,
    }))


if __name__ == "__main__":
    main()
