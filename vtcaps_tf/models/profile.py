"""Parameters and FLOPs per clip of a preset, next to the paper (`vtcaps profile`).

FLOPs are counted by TensorFlow's profiler on the frozen inference graph of one clip (batch 1):
every multiply and every add counts as one floating-point operation, so a multiply-accumulate is 2.
Both the 3D-CapsNet alone (what the paper's Table 3 reports) and the full VT-3DCapsNet are shown.
"""

from __future__ import annotations

import dataclasses
import sys

PAPER_TABLE3 = {"params_m": 6.40, "gflops": 445.38}  # 3D-CapsNet, paper Table 3


def count_flops(fn, input_signature) -> int:
    """Float operations of one call of `fn` (a tf.function-able callable) on `input_signature`."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    concrete = tf.function(fn).get_concrete_function(*input_signature)
    frozen = convert_variables_to_constants_v2(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"  # the profiler otherwise prints a table per op to stdout
    info = tf.compat.v1.profiler.profile(graph=frozen.graph, run_meta=tf.compat.v1.RunMetadata(),
                                         cmd="op", options=options)
    return int(info.total_float_ops)


def profile_model(model) -> dict:
    """{"params", "trainable_params", "flops"} of a built VT3DCapsNet for one clip."""
    specs = model.input_specs(batch_size=1)

    def forward(inputs):
        return model(inputs, training=False)

    return {
        "params": int(model.count_params()),
        "trainable_params": int(sum(int(w.numpy().size) for w in model.trainable_weights)),
        "flops": count_flops(forward, [specs]),
    }


def profile_preset(name: str, **overrides) -> dict:
    """Profile of the preset as 3D-CapsNet alone and as the full VT-3DCapsNet (if it has TPN)."""
    from vtcaps_tf.models import build_model, get_preset

    config = get_preset(name, **overrides)
    result = {"preset": name, "clip_frames": config.clip_frames, "long_frames": config.long_frames,
              "image_size": config.image_size, "depth": config.depth, "width": config.width,
              "paper_table3": PAPER_TABLE3}
    variants = [("capsnet3d", dataclasses.replace(config, use_tpn=False))]
    if config.use_tpn:
        variants.append(("vt3dcapsnet", config))
    for key, cfg in variants:
        print(f"profiling {name} {key} ...", file=sys.stderr, flush=True)
        stats = profile_model(build_model(cfg))
        stats["params_m"] = round(stats["params"] / 1e6, 3)
        stats["gflops"] = round(stats["flops"] / 1e9, 3)
        result[key] = stats
    return result


def format_table(result: dict) -> str:
    rows = [("model", "params (M)", "GFLOPs/clip")]
    for key, label in (("capsnet3d", "3D-CapsNet"), ("vt3dcapsnet", "VT-3DCapsNet (+TPN-ERM)")):
        if key in result:
            rows.append((f"{label}, preset {result['preset']}", f"{result[key]['params_m']:.2f}",
                         f"{result[key]['gflops']:.2f}"))
    rows.append(("3D-CapsNet, paper Table 3", f"{PAPER_TABLE3['params_m']:.2f}",
                 f"{PAPER_TABLE3['gflops']:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}" for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    head = (f"preset {result['preset']}: ResNet-{result['depth']} (2+1)D, width {result['width']}, "
            f"{result['clip_frames']} frames (TPN {result['long_frames']}), "
            f"{result['image_size']}x{result['image_size']}; FLOPs count multiply and add separately")
    return head + "\n" + "\n".join(lines)
