"""Subject-independent K-fold cross-validation (the CK+ protocol) on the output of `vtcaps
preprocess --folds K`: `crossval(CrossvalOptions(...))`, run by `vtcaps crossval` and the
pipeline's CrossVal step.

Fold k's model: test = fold k; validation = the next `--val-folds` folds (k+1, ... mod K), so it is
carved from the other folds' subjects and never from the test fold; training = the remaining folds.
Every subject - hence every video - is in exactly one fold, so each video is tested exactly once.

    OUT/foldNN/run/        the fold's training run (train_config.json, checkpoints, TensorBoard
                           logs under logs/, model.keras), resumed from its checkpoint on a rerun
    OUT/foldNN/report.*    the fold's test report (clip and video level); its presence marks the
                           fold finished: a rerun skips it
    OUT/report.json        per fold num_videos, num_clips, clip and video accuracy, UAR, macro F1;
                           their mean and standard deviation over folds; confusion matrices summed
                           over folds (clip and video level) and the pooled per-class P/R/F1
    OUT/report.md          laid out like the paper's Table 2 (accuracy against the paper's) and
                           Table 5 (per-class P, R, F1)
    OUT/confusion_matrix.png, OUT/confusion_matrix_video.png
"""

from __future__ import annotations

import json
import os

import numpy as np

from vtcaps_tf.config.options import to_mapping
from vtcaps_tf.config.train_options import CrossvalOptions
from vtcaps_tf.errors import UsageError
from vtcaps_tf.evaluation import metrics
from vtcaps_tf.utils import atomic_files

# Accuracy (%) the paper reports (Table 2: 3D-CapsNet; Table 4: VT-3DCapsNet), by source.
PAPER_ACCURACY = {"ckplus": ("CK+", 96.26, 98.57), "afew": ("AFEW", 52.63, 55.01)}
# The per-fold figures averaged in the summary: (level, metric).
FOLD_METRICS = tuple((level, key) for level in ("clip", "video")
                     for key in ("accuracy", "uar", "macro_f1"))
# The figures of the confusion matrices summed over folds, per level.
POOLED_METRICS = ("num_samples", "accuracy", "uar", "macro_precision", "macro_recall", "macro_f1",
                  "weighted_f1", "absent_classes")


class CrossvalError(UsageError):
    """The data or the output directory does not allow the cross-validation as asked."""


def fold_plan(num_folds: int, val_folds: int = 1) -> list[dict]:
    """For every fold k: {"fold", "test", "val", "train"} as lists of fold indices."""
    if num_folds < 2:
        raise CrossvalError(f"cross-validation needs at least 2 folds, the data has {num_folds}")
    if not 0 <= val_folds <= num_folds - 2:
        raise CrossvalError(f"--val-folds must be in 0..{num_folds - 2} with {num_folds} folds "
                            f"(at least one fold left to train on), got {val_folds}")
    plan = []
    for k in range(num_folds):
        val = [(k + 1 + j) % num_folds for j in range(val_folds)]
        train = [i for i in range(num_folds) if i != k and i not in val]
        plan.append({"fold": k, "test": [k], "val": val, "train": train})
    return plan


def fold_summary(report: dict) -> dict:
    """The figures of one fold's report that the cross-validation report lists."""
    video = report["video"]
    out = {"num_videos": report["num_videos"], "num_clips": report["num_samples"]}
    for level, key in FOLD_METRICS:
        out[f"{level}_{key}"] = (report if level == "clip" else video)[key]
    return out


def summarize(fold_reports: list[dict], classes: list[str]) -> dict:
    """Per-fold figures, their mean and standard deviation (over folds, ddof=0), and the confusion
    matrices summed over folds with the per-class P/R/F1 they give and, under `pooled` (`clip`,
    `video`), their accuracy, UAR and macro figures, averaged over the classes present in the
    pooled labels (vtcaps_tf.evaluation.metrics' conventions)."""
    folds = []
    for k, rep in enumerate(fold_reports):
        if [str(c) for c in rep["classes"]] != [str(c) for c in classes]:
            raise CrossvalError(f"fold {k} was evaluated on classes {rep['classes']}, the data has "
                                f"{classes}: the label sets of the folds differ")
        folds.append({"fold": k, **fold_summary(rep)})
    keys = [f"{level}_{key}" for level, key in FOLD_METRICS]
    values = {key: np.array([f[key] for f in folds], np.float64) for key in keys}
    out = {"folds": folds,
           "mean": {key: float(v.mean()) for key, v in values.items()},
           "std": {key: float(v.std()) for key, v in values.items()},
           "classes": list(classes),
           "num_videos": int(sum(f["num_videos"] for f in folds)),
           "num_clips": int(sum(f["num_clips"] for f in folds))}
    out["pooled"] = {}
    for level, name, pick in (("clip", "confusion_matrix", lambda r: r),
                              ("video", "video_confusion_matrix", lambda r: r["video"])):
        cm = np.sum([np.asarray(pick(r)["confusion_matrix"], np.int64) for r in fold_reports], axis=0)
        pooled = metrics.summary_from_confusion(cm, classes)
        out[name] = pooled["confusion_matrix"]
        out[name.replace("confusion_matrix", "per_class")] = pooled["per_class"]
        out["pooled"][level] = {key: pooled[key] for key in POOLED_METRICS}
    return out


def report_markdown(summary: dict, source: str | None, title: str) -> str:
    """Table 2 (accuracy against the paper's), the per-fold table, Table 5 (per-class P/R/F1)."""
    m, s = summary["mean"], summary["std"]
    k = len(summary["folds"])
    name, paper_capsnet, paper_vt = PAPER_ACCURACY.get(source, (source or "data", None, None))
    lines = [f"# {title}", "",
             f"{k}-fold subject-independent cross-validation: {summary['num_videos']} videos, "
             f"{summary['num_clips']} clips, each tested once. Mean ± standard deviation over folds.",
             "", "Table 2 layout (accuracy, %):", "", f"| method | {name} |", "|---|---:|"]
    if paper_capsnet is not None:
        lines += [f"| 3D-CapsNet (paper, Table 2) | {paper_capsnet:.2f} |",
                  f"| VT-3DCapsNet (paper, Table 4) | {paper_vt:.2f} |"]
    lines += [f"| this run, clip level | {100 * m['clip_accuracy']:.2f} ± {100 * s['clip_accuracy']:.2f} |",
              f"| this run, video level | {100 * m['video_accuracy']:.2f} ± {100 * s['video_accuracy']:.2f} |",
              "", "Per fold (%):", "",
              "| fold | videos | clips | clip acc | clip UAR | clip macro F1 | video acc | "
              "video UAR | video macro F1 |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def row(label, f, videos="", clips=""):
        return (f"| {label} | {videos} | {clips} | " + " | ".join(
            f"{100 * f[f'{lv}_{key}']:.2f}" for lv, key in FOLD_METRICS) + " |")

    for f in summary["folds"]:
        lines.append(row(f["fold"], f, f["num_videos"], f["num_clips"]))
    lines += [row("mean", m, summary["num_videos"], summary["num_clips"]), row("std", s)]
    lines += ["", f"Table 5 layout ({name}, confusion matrices summed over folds):", "",
              "| expression | P (%) | R (%) | F1 (%) | video P (%) | video R (%) | video F1 (%) |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for c in summary["classes"]:
        a, v = summary["per_class"][c], summary["video_per_class"][c]
        lines.append(f"| {c} | {100 * a['precision']:.2f} | {100 * a['recall']:.2f} | "
                     f"{100 * a['f1']:.2f} | {100 * v['precision']:.2f} | {100 * v['recall']:.2f} | "
                     f"{100 * v['f1']:.2f} |")
    lines += ["", "Video-level confusion matrix summed over folds (rows: true, columns: predicted):",
              "", "| true \\ predicted | " + " | ".join(summary["classes"]) + " |",
              "|---|" + "---:|" * len(summary["classes"])]
    for c, r in zip(summary["classes"], summary["video_confusion_matrix"]):
        lines.append(f"| {c} | " + " | ".join(str(x) for x in r) + " |")
    return "\n".join(lines) + "\n"


def _without_defaults(settings: dict) -> dict:
    """Settings less those left at CrossvalOptions' defaults, for comparing: a run started from the
    CLI (every option spelled out) and one from Python (defaults omitted) compare equal, and a
    run recorded before an option existed still resumes."""
    defaults = to_mapping(CrossvalOptions(data_dir="", output=""))
    return {k: v for k, v in settings.items() if k not in defaults or v != defaults[k]}


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def run_fold(options: CrossvalOptions, meta: dict, step: dict, fold_dir: str,
             strategy=None) -> dict:
    """Train fold k's model (resuming its checkpoint), test it on fold k, write its report.

    strategy: a MultiWorkerMirroredStrategy (`vtcaps_tf.train.multiworker.start`) to train on a
    multi-worker cluster; only its chief writes the report."""
    from vtcaps_tf.data import features
    from vtcaps_tf.evaluation import evaluate
    from vtcaps_tf.train import fit, multiworker

    def files(indices):
        return sorted(f for i in indices
                      for f in features.split_files(options.data_dir, features.fold_split(i)))

    config = options.fold_config(os.path.join(fold_dir, "run"))
    if strategy is not None:
        result = multiworker.train(config, strategy, files(step["train"]), files(step["val"]))
    else:
        result = fit.train(config, files(step["train"]), files(step["val"]))
    test_split = features.fold_split(step["fold"])
    expected = (meta.get("counts") or {}).get(test_split)
    parts = (evaluate.readable_parts(files(step["test"]), expected, "vtcaps crossval")
             if options.skip_corrupt_records else None)
    labels, probs, tpn, ids = evaluate.predict_files(result.model, files(step["test"]), meta,
                                                     options.batch_size, what=test_split, parts=parts)
    report = evaluate.build_report(labels, probs, result.model.class_names, tpn, video_ids=ids)
    if parts is not None:
        tested = evaluate.skipped_summary(parts, expected)
        report.update(skipped_clips={"training": result.skipped_clips, "test": tested["skipped_clips"]},
                      corrupt_shards=result.corrupt_shards + tested["corrupt_shards"])
    report.update(fold=step["fold"], test=test_split,
                  val=[features.fold_split(i) for i in step["val"]],
                  train=[features.fold_split(i) for i in step["train"]],
                  test_subjects=sorted(s for s, k in (meta.get("fold_of_subject") or {}).items()
                                       if k == step["fold"]),
                  video_ids=sorted(set(ids)))
    if strategy is not None and not _is_chief():
        return json.loads(json.dumps(report))
    paths = evaluate.write_report(report, fold_dir, title=f"fold {step['fold']} ({test_split})")
    return _read_json(paths["report.json"])


def _is_chief() -> bool:
    from vtcaps_tf.train import multiworker

    return multiworker.cluster_spec()[0] == 0


def crossval(options: CrossvalOptions, log=print, strategy=None) -> dict:
    """Run (or resume) the whole cross-validation; returns the summary written to report.json.
    strategy: see run_fold (every worker runs this; the chief writes the reports)."""
    from vtcaps_tf.data import features
    from vtcaps_tf.evaluation.figures import confusion_matrix_figure

    data_dir, output = options.data_dir, options.output
    meta = features.read_metadata(data_dir)
    num_folds = int(meta.get("folds") or 0)
    if not num_folds:
        raise CrossvalError(f"{data_dir!r} is split into train/val/test, not folds: run "
                            "`vtcaps preprocess ... --folds K` for cross-validation")
    classes = [str(c) for c in meta["classes"]]
    os.makedirs(output, exist_ok=True)
    settings = {"data": os.path.abspath(data_dir), "classes": classes,
                **{k: v for k, v in to_mapping(options).items() if k != "verbose"}}
    settings_path = os.path.join(output, "crossval_config.json")
    if os.path.exists(settings_path):
        old, new = _without_defaults(_read_json(settings_path)), _without_defaults(settings)
        if old != new:
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise CrossvalError(f"{output!r} holds a cross-validation with other settings "
                                f"({', '.join(changed)}): choose a new --output")
    else:
        atomic_files.write_json(settings_path, settings)
    reports = []
    for step in fold_plan(num_folds, options.val_folds):
        fold_dir = os.path.join(output, features.fold_split(step["fold"]))
        report_path = os.path.join(fold_dir, "report.json")
        if os.path.exists(report_path):
            log(f"crossval: fold {step['fold']}/{num_folds}: finished earlier, skipped")
            reports.append(_read_json(report_path))
            continue
        log(f"crossval: fold {step['fold']}/{num_folds}: test {features.fold_split(step['fold'])}, "
            f"val {[features.fold_split(i) for i in step['val']]}, "
            f"train {[features.fold_split(i) for i in step['train']]}")
        reports.append(run_fold(options, meta, step, fold_dir, strategy))
        f = fold_summary(reports[-1])
        log(f"crossval: fold {step['fold']}: clip accuracy {100 * f['clip_accuracy']:.2f}%, "
            f"video accuracy {100 * f['video_accuracy']:.2f}% ({f['num_videos']} videos)")
    summary = summarize(reports, classes)
    tested = [v for r in reports for v in r.get("video_ids", [])]
    if len(tested) != len(set(tested)):
        raise CrossvalError("a video was tested in more than one fold: the folds overlap")
    summary.update(settings=settings, source=meta.get("source"),
                   fold_of_subject=meta.get("fold_of_subject"),
                   std_note="population standard deviation over folds (ddof=0)")
    if strategy is not None and not _is_chief():
        return summary
    # report.json last: a run killed on the way leaves no summary that reads as complete
    for name, key in (("confusion_matrix.png", "confusion_matrix"),
                      ("confusion_matrix_video.png", "video_confusion_matrix")):
        level = "clips" if key == "confusion_matrix" else "videos"
        fig = confusion_matrix_figure(summary[key], classes,
                                      title=f"{num_folds}-fold cross-validation, {level}")
        with atomic_files.atomic_path(os.path.join(output, name)) as tmp:
            fig.savefig(tmp)
    atomic_files.write_text(os.path.join(output, "report.md"),
                            report_markdown(summary, meta.get("source"),
                                            f"Cross-validation, {options.preset} preset"))
    atomic_files.write_json(os.path.join(output, "report.json"), summary)
    return summary
