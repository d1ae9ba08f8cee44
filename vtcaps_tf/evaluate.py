"""`vtcaps evaluate`: a trained model on one split -> report.json, report.md, confusion_matrix.png.

The report holds accuracy (= WAR), UAR, per-class precision/recall/F1 with the standard definitions
(`vtcaps_tf.metrics`), macro and weighted F1 and the confusion matrix; report.md lays the
per-class figures out like the paper's Table 5 (percentages).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from vtcaps_tf import metrics


def predict_split(model, data_dir: str, split: str = "test", batch_size: int = 16, verbose=0):
    """(labels, probabilities, tpn_probabilities or None) of every clip of one split."""
    import tensorflow as tf

    from vtcaps_tf.data import dataset, features

    meta = features.read_metadata(data_dir)
    model_classes = [str(c) for c in getattr(model, "class_names", None) or []]
    if model_classes and model_classes != [str(c) for c in meta["classes"]]:
        raise ValueError(f"the model's classes {model_classes} differ from the data's {meta['classes']}")
    mc = model.config
    ds = dataset.read_split(data_dir, split, mc.clip_frames, mc.long_frames, mc.image_size)
    ds = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    labels, probs, tpn = [], [], []
    total = (meta.get("counts") or {}).get(split)
    done = 0
    for inputs, y in ds:
        out = model(inputs, training=False)
        labels.append(np.asarray(y))
        probs.append(np.asarray(out["probabilities"], np.float32))
        if "tpn_probabilities" in out:
            tpn.append(np.asarray(out["tpn_probabilities"], np.float32))
        done += len(labels[-1])
        if verbose:
            print(f"\revaluated {done}/{total or '?'} clips", end="", file=sys.stderr, flush=True)
    if verbose:
        print(file=sys.stderr)
    if not labels:
        raise ValueError(f"the {split} split of {data_dir!r} holds no clips")
    return (np.concatenate(labels), np.concatenate(probs),
            np.concatenate(tpn) if tpn else None)


def build_report(labels, probabilities, class_names, tpn_probabilities=None) -> dict:
    report = metrics.classification_report(labels, np.argmax(probabilities, -1), class_names)
    if tpn_probabilities is not None:
        report["tpn_accuracy"] = float(np.mean(np.argmax(tpn_probabilities, -1) == np.asarray(labels)))
    return report


def report_markdown(report: dict, title: str = "Evaluation") -> str:
    """The per-class table (P, R, F1 in percent, like the paper's Table 5) and the summary."""
    lines = [f"# {title}", "", f"{report['num_samples']} clips.", "",
             "| expression | P (%) | R (%) | F1 (%) | support |", "|---|---:|---:|---:|---:|"]
    for name in report["classes"]:
        c = report["per_class"][name]
        lines.append(f"| {name} | {100 * c['precision']:.2f} | {100 * c['recall']:.2f} | "
                     f"{100 * c['f1']:.2f} | {c['support']} |")
    lines += ["", "| metric | value (%) |", "|---|---:|"]
    for key, label in (("accuracy", "accuracy (WAR)"), ("uar", "UAR"), ("macro_f1", "macro F1"),
                       ("weighted_f1", "weighted F1"), ("tpn_accuracy", "TPN head accuracy")):
        if key in report:
            lines.append(f"| {label} | {100 * report[key]:.2f} |")
    lines += ["", "Confusion matrix (rows: true, columns: predicted):", "",
              "| true \\ predicted | " + " | ".join(report["classes"]) + " |",
              "|---|" + "---:|" * len(report["classes"])]
    for name, row in zip(report["classes"], report["confusion_matrix"]):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def write_report(report: dict, output_dir: str, title: str = "Evaluation") -> dict:
    """report.json, report.md and confusion_matrix.png in output_dir; returns their paths."""
    from vtcaps_tf.callbacks import confusion_matrix_figure

    os.makedirs(output_dir, exist_ok=True)
    paths = {name: os.path.join(output_dir, name)
             for name in ("report.json", "report.md", "confusion_matrix.png")}
    with open(paths["report.json"], "w") as f:
        json.dump(report, f, indent=2)
    with open(paths["report.md"], "w") as f:
        f.write(report_markdown(report, title))
    fig = confusion_matrix_figure(report["confusion_matrix"], report["classes"], title=title)
    fig.savefig(paths["confusion_matrix.png"])
    return paths


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vtcaps evaluate", description=(
        "Evaluate a trained model on one split: accuracy, per-class P/R/F1, UAR/WAR, confusion "
        "matrix -> report.json, report.md, confusion_matrix.png"))
    p.add_argument("--model", required=True, help="RUN_DIR/model.keras")
    p.add_argument("--data", required=True, help="output directory of `vtcaps preprocess`")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--output", required=True, help="directory for the report files")
    p.add_argument("--batch-size", type=int, default=16)
    return p


def cli_main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from vtcaps_tf.data.features import SchemaError
    from vtcaps_tf.models import load_trained_model

    try:
        model = load_trained_model(args.model)
    except (OSError, ValueError) as err:
        print(f"vtcaps evaluate: {err}", file=sys.stderr)
        return 2
    try:
        labels, probs, tpn = predict_split(model, args.data, args.split, args.batch_size, verbose=1)
    except (SchemaError, ValueError) as err:
        print(f"vtcaps evaluate: {err}", file=sys.stderr)
        return 2
    report = build_report(labels, probs, model.class_names, tpn)
    report["split"] = args.split
    report["model"] = os.path.abspath(args.model)
    paths = write_report(report, args.output, title=f"{os.path.basename(args.model)} on {args.split}")
    print(f"accuracy {100 * report['accuracy']:.2f}%  UAR {100 * report['uar']:.2f}%  "
          f"macro F1 {100 * report['macro_f1']:.2f}%  ({report['num_samples']} clips)")
    for path in paths.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
