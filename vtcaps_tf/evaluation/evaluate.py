"""A trained model on one split -> report.json, report.md, confusion_matrix.png (`vtcaps evaluate`
calls `evaluate_model`; its flags live in vtcaps_tf.cli.evaluate).

The report holds accuracy (= WAR), UAR, per-class precision/recall/F1 with the standard definitions,
macro and weighted F1, the classes absent from the labels and the confusion matrix, clip by clip
(`vtcaps_tf.evaluation.metrics` states the conventions: UAR and the macro averages are over the
classes present in the labels); its `video` entry holds the same figures video by video (a video's
prediction: the mean of its clips' probabilities). report.md lays the per-class figures out like
the paper's Table 5 (percentages).
"""

from __future__ import annotations

import os
import sys

import numpy as np

from vtcaps_tf.errors import UsageError
from vtcaps_tf.evaluation import metrics
from vtcaps_tf.utils import atomic_files


def split_input(data_dir: str, split: str) -> tuple[dict, list[str]]:
    """(metadata, shard files) of one split of a preprocessed data set. Raises SchemaError."""
    from vtcaps_tf.data import features

    meta = features.read_metadata(data_dir)
    files = features.split_files(data_dir, split)
    if not files:
        raise features.SchemaError(f"no {split}-*{features.SHARD_SUFFIX} shards in {data_dir!r} "
                                   f"(it holds {', '.join(features.data_splits(meta))})")
    return meta, files


def predict_split(model, data_dir: str, split: str = "test", batch_size: int = 16, verbose=0):
    """(labels, probabilities, tpn_probabilities or None, video_ids) of every clip of one split."""
    meta, files = split_input(data_dir, split)
    return predict_files(model, files, meta, batch_size, verbose, what=split)


def check_classes(model, meta: dict) -> None:
    """A clear error when the model was trained on another label set than the data's."""
    model_classes = [str(c) for c in getattr(model, "class_names", None) or []]
    if model_classes and model_classes != [str(c) for c in meta["classes"]]:
        raise ValueError(f"the model's classes {model_classes} differ from the data's {meta['classes']}")


def readable_parts(files, expected: int | None, command: str = "vtcaps evaluate"):
    """What `--skip-corrupt-records` reads of `files` (`integrity.ReadableParts`), a line on
    stderr for each shard cut short."""
    from vtcaps_tf.data import integrity

    parts = integrity.readable_parts(files)
    if parts.corrupt:
        print(f"{command}: skipping corrupt records: {parts.summary(expected)}", file=sys.stderr)
    return parts


def skipped_summary(parts, expected: int | None) -> dict:
    """The report's account of what `--skip-corrupt-records` left out."""
    return {"skipped_clips": parts.skipped_clips(expected) if parts.corrupt else 0,
            "corrupt_shards": [c.describe() for c in parts.corrupt]}


def predict_files(model, files, meta: dict, batch_size: int = 16, verbose=0, what: str = "data",
                  parts=None):
    """(labels, probabilities, tpn_probabilities or None, video_ids) of every clip in `files`
    (`parts`: only their readable records, `readable_parts`). A shard that cannot be read to its
    end is a CorruptDataError naming it."""
    import tensorflow as tf

    from vtcaps_tf.data import dataset, integrity

    check_classes(model, meta)
    ds = dataset.read_files(files, model.contract, with_video_id=True,
                            records=parts.records if parts is not None else None)
    ds = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    labels, probs, tpn, ids = [], [], [], []
    total = (meta.get("counts") or {}).get(what)
    done = 0
    with integrity.naming_corrupt_shard(files):
        for inputs, y, vid in ds:
            out = model(inputs, training=False)
            labels.append(np.asarray(y))
            ids += [v.decode() for v in vid.numpy()]
            probs.append(np.asarray(out["probabilities"], np.float32))
            if "tpn_probabilities" in out:
                tpn.append(np.asarray(out["tpn_probabilities"], np.float32))
            done += len(labels[-1])
            if verbose:
                print(f"\revaluated {done}/{total or '?'} clips", end="", file=sys.stderr, flush=True)
    if verbose:
        print(file=sys.stderr)
    if not labels:
        raise ValueError(f"{what} holds no clips")
    return (np.concatenate(labels), np.concatenate(probs),
            np.concatenate(tpn) if tpn else None, ids)


def build_report(labels, probabilities, class_names, tpn_probabilities=None, video_ids=None) -> dict:
    """Clip-level figures at the top level; with `video_ids`, the video-level ones under `video`
    and `num_videos` (each video's prediction: the mean of its clips' probabilities)."""
    report = metrics.classification_report(labels, np.argmax(probabilities, -1), class_names)
    report["level"] = "clip"
    if tpn_probabilities is not None:
        report["tpn_accuracy"] = float(np.mean(np.argmax(tpn_probabilities, -1) == np.asarray(labels)))
    if video_ids is not None:
        ids, v_labels, v_probs = metrics.video_level(video_ids, labels, probabilities)
        report["num_videos"] = len(ids)
        report["video"] = metrics.classification_report(v_labels, np.argmax(v_probs, -1), class_names)
        report["video"]["level"] = "video"
        report["video"]["aggregation"] = "mean of clip probabilities"
    return report


_SUMMARY_ROWS = (("accuracy", "accuracy (WAR)"), ("uar", "UAR"), ("macro_f1", "macro F1"),
                 ("weighted_f1", "weighted F1"), ("tpn_accuracy", "TPN head accuracy"))


def report_markdown(report: dict, title: str = "Evaluation") -> str:
    """The per-class table (P, R, F1 in percent, like the paper's Table 5) and the summary."""
    video = report.get("video")
    count = f"{report['num_samples']} clips" + (f", {report['num_videos']} videos" if video else "")
    absent = report.get("absent_classes")
    lines = [f"# {title}", "", f"{count}."] + ([
        "", f"No test sample of {', '.join(absent)}: left out of UAR and the macro averages."]
        if absent else []) + ["", "Per class, clip level:", "",
             "| expression | P (%) | R (%) | F1 (%) | support |", "|---|---:|---:|---:|---:|"]
    for name in report["classes"]:
        c = report["per_class"][name]
        lines.append(f"| {name} | {100 * c['precision']:.2f} | {100 * c['recall']:.2f} | "
                     f"{100 * c['f1']:.2f} | {c['support']} |")
    if video:
        lines += ["", "| metric | clip level (%) | video level (%) |", "|---|---:|---:|"]
        for key, label in _SUMMARY_ROWS:
            if key in report:
                v = f"{100 * video[key]:.2f}" if key in video else "-"
                lines.append(f"| {label} | {100 * report[key]:.2f} | {v} |")
    else:
        lines += ["", "| metric | value (%) |", "|---|---:|"]
        for key, label in _SUMMARY_ROWS:
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
    from vtcaps_tf.evaluation.figures import confusion_matrix_figure

    os.makedirs(output_dir, exist_ok=True)
    paths = {name: os.path.join(output_dir, name)
             for name in ("report.json", "report.md", "confusion_matrix.png")}
    # report.json last: the file a rerun (and crossval's fold resume) takes as "done"
    fig = confusion_matrix_figure(report["confusion_matrix"], report["classes"], title=title)
    with atomic_files.atomic_path(paths["confusion_matrix.png"]) as tmp:
        fig.savefig(tmp)
    atomic_files.write_text(paths["report.md"], report_markdown(report, title))
    atomic_files.write_json(paths["report.json"], report)
    return paths


def evaluate_model(model_path: str, data_dir: str, split: str = "test", output: str | None = None,
                   batch_size: int = 16, verbose=0, skip_corrupt_records: bool = False
                   ) -> tuple[dict, dict]:
    """Load `model_path` and evaluate it on `split` of `data_dir` -> (report, files written to
    `output`: name -> path, empty without `output`). Raises UsageError, naming the path, for a
    missing or unusable model or data directory, or a model trained on other classes; a
    CorruptDataError naming the shard that cannot be read to its end, unless
    `skip_corrupt_records` (the report then counts the clips left out)."""
    from vtcaps_tf.models import load_trained_model

    try:
        model = load_trained_model(model_path)
        meta, files = split_input(data_dir, split)
        check_classes(model, meta)
    except (OSError, ValueError) as err:
        if isinstance(err, UsageError):
            raise
        raise UsageError(str(err)) from err
    expected = (meta.get("counts") or {}).get(split)
    parts = readable_parts(files, expected) if skip_corrupt_records else None
    labels, probs, tpn, ids = predict_files(model, files, meta, batch_size, verbose, what=split,
                                            parts=parts)
    report = build_report(labels, probs, model.class_names, tpn, video_ids=ids)
    if parts is not None:
        report.update(skipped_summary(parts, expected))
    report["split"] = split
    report["model"] = os.path.abspath(model_path)
    paths = {}
    if output:
        paths = write_report(report, output, title=f"{os.path.basename(model_path)} on {split}")
    return report, paths
