"""`vtcaps crossval`: subject-independent K-fold cross-validation (the CK+ protocol) on the output
of `vtcaps preprocess --folds K`.

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

import argparse
import json
import os
import sys

import numpy as np

from vtcaps_tf.evaluation import metrics
from vtcaps_tf.config.flags import DEFAULT_PRESET

# Accuracy (%) the paper reports (Table 2: 3D-CapsNet; Table 4: VT-3DCapsNet), by source.
PAPER_ACCURACY = {"ckplus": ("CK+", 96.26, 98.57), "afew": ("AFEW", 52.63, 55.01)}
# The per-fold figures averaged in the summary: (level, metric).
FOLD_METRICS = tuple((level, key) for level in ("clip", "video")
                     for key in ("accuracy", "uar", "macro_f1"))
# The figures of the confusion matrices summed over folds, per level.
POOLED_METRICS = ("num_samples", "accuracy", "uar", "macro_precision", "macro_recall", "macro_f1",
                  "weighted_f1", "absent_classes")


class CrossvalError(ValueError):
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
    """Settings less those left at TrainConfig's defaults, for comparing: a run started from the
    CLI (every option spelled out) and one from Python (defaults omitted) compare equal, and a
    run recorded before an option existed still resumes."""
    import dataclasses

    from vtcaps_tf.train.fit import TrainConfig

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)
                if f.default is not dataclasses.MISSING}
    return {k: v for k, v in settings.items() if k not in defaults or v != defaults[k]}


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)  # a killed run never leaves a half-written report behind


def run_fold(config_kwargs: dict, data_dir: str, meta: dict, step: dict, fold_dir: str,
             batch_size: int, multi_worker: dict | None = None) -> dict:
    """Train fold k's model (resuming its checkpoint), test it on fold k, write its report.

    multi_worker: {"strategy", "shard", "timeout", "chief"} to train on a multi-worker cluster
    (vtcaps_tf.train.multiworker); only the chief writes the report."""
    from vtcaps_tf.evaluation import evaluate
    from vtcaps_tf.train import fit as training
    from vtcaps_tf.data import features

    def files(indices):
        return sorted(f for i in indices for f in features.split_files(data_dir, features.fold_split(i)))

    config = training.TrainConfig(data_dir=data_dir, run_dir=os.path.join(fold_dir, "run"),
                                  resume=True, batch_size=batch_size, **config_kwargs)
    if multi_worker:
        from vtcaps_tf.train import multiworker

        result = multiworker.train(config, multi_worker["shard"], multi_worker["timeout"],
                                   files(step["train"]), files(step["val"]),
                                   strategy=multi_worker["strategy"])
    else:
        result = training.train_on_files(config, files(step["train"]), files(step["val"]))
    test_split = features.fold_split(step["fold"])
    labels, probs, tpn, ids = evaluate.predict_files(result.model, files(step["test"]), meta,
                                                     batch_size, what=test_split)
    report = evaluate.build_report(labels, probs, result.model.class_names, tpn, video_ids=ids)
    report.update(fold=step["fold"], test=test_split,
                  val=[features.fold_split(i) for i in step["val"]],
                  train=[features.fold_split(i) for i in step["train"]],
                  test_subjects=sorted(s for s, k in (meta.get("fold_of_subject") or {}).items()
                                       if k == step["fold"]),
                  video_ids=sorted(set(ids)))
    if multi_worker and not multi_worker["chief"]:
        return json.loads(json.dumps(report))
    paths = evaluate.write_report(report, fold_dir, title=f"fold {step['fold']} ({test_split})")
    return _read_json(paths["report.json"])


def crossval(data_dir: str, output: str, preset: str = DEFAULT_PRESET, epochs: int = 500,
             batch_size: int = 16, val_folds: int = 1, log=print, multi_worker: dict | None = None,
             **train_kwargs) -> dict:
    """Run (or resume) the whole cross-validation; returns the summary written to report.json.
    multi_worker: see run_fold (every worker runs this; the chief writes the reports)."""
    from vtcaps_tf.evaluation.figures import confusion_matrix_figure
    from vtcaps_tf.data import features

    meta = features.read_metadata(data_dir)
    num_folds = int(meta.get("folds") or 0)
    if not num_folds:
        raise CrossvalError(f"{data_dir!r} is split into train/val/test, not folds: run "
                            "`vtcaps preprocess ... --folds K` for cross-validation")
    classes = [str(c) for c in meta["classes"]]
    os.makedirs(output, exist_ok=True)
    settings = {"data": os.path.abspath(data_dir), "preset": preset, "epochs": epochs,
                "batch_size": batch_size, "val_folds": val_folds, "classes": classes,
                **{k: v for k, v in train_kwargs.items() if k != "verbose"}}
    settings = json.loads(json.dumps(settings, default=str))
    settings_path = os.path.join(output, "crossval_config.json")
    if os.path.exists(settings_path):
        old, new = _without_defaults(_read_json(settings_path)), _without_defaults(settings)
        if old != new:
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise CrossvalError(f"{output!r} holds a cross-validation with other settings "
                                f"({', '.join(changed)}): choose a new --output")
    else:
        _write_json(settings_path, settings)
    reports = []
    for step in fold_plan(num_folds, val_folds):
        fold_dir = os.path.join(output, features.fold_split(step["fold"]))
        report_path = os.path.join(fold_dir, "report.json")
        if os.path.exists(report_path):
            log(f"crossval: fold {step['fold']}/{num_folds}: finished earlier, skipped")
            reports.append(_read_json(report_path))
            continue
        log(f"crossval: fold {step['fold']}/{num_folds}: test {features.fold_split(step['fold'])}, "
            f"val {[features.fold_split(i) for i in step['val']]}, "
            f"train {[features.fold_split(i) for i in step['train']]}")
        reports.append(run_fold(dict(preset=preset, epochs=epochs, **train_kwargs), data_dir, meta,
                                step, fold_dir, batch_size, multi_worker))
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
    if multi_worker and not multi_worker["chief"]:
        return summary
    _write_json(os.path.join(output, "report.json"), summary)
    with open(os.path.join(output, "report.md"), "w") as f:
        f.write(report_markdown(summary, meta.get("source"), f"Cross-validation, {preset} preset"))
    for name, key in (("confusion_matrix.png", "confusion_matrix"),
                      ("confusion_matrix_video.png", "video_confusion_matrix")):
        level = "clips" if key == "confusion_matrix" else "videos"
        fig = confusion_matrix_figure(summary[key], classes,
                                      title=f"{num_folds}-fold cross-validation, {level}")
        fig.savefig(os.path.join(output, name))
    return summary


def build_parser() -> argparse.ArgumentParser:
    from vtcaps_tf.config import flags as cli_parsers

    p = argparse.ArgumentParser(prog="vtcaps crossval", description=(
        "Subject-independent K-fold cross-validation on the output of `vtcaps preprocess --folds K`: "
        "one model per fold (test = that fold, validation = the next fold's subjects), clip- and "
        "video-level reports per fold, OUT/report.json and report.md (mean ± std over folds). "
        "A rerun skips finished folds and resumes the one that was interrupted."))
    p.add_argument("--data", required=True, help="output directory of `vtcaps preprocess --folds K`")
    p.add_argument("--output", required=True, help="directory for the fold runs and the reports")
    p.add_argument("--preset", default=cli_parsers.DEFAULT_PRESET, choices=cli_parsers.preset_names(),
                   help=f"model preset (default {cli_parsers.DEFAULT_PRESET})")
    p.add_argument("--epochs", type=int, default=cli_parsers.PAPER_EPOCHS,
                   help=f"epochs per fold (default {cli_parsers.PAPER_EPOCHS}, the paper's)")
    p.add_argument("--batch-size", type=int, default=16, help="global batch size (default 16)")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    cli_parsers.add_lr_schedule_argument(p)
    p.add_argument("--val-folds", type=int, default=1,
                   help="folds after the test fold used for validation (default 1; 0: none)")
    p.add_argument("--no-augment", action="store_true", help="turn the training augmentations off")
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", default="2", help="keras fit verbosity: auto, 0, 1 or 2 (default 2)")

    cli_parsers.add_model_arguments(p)
    cli_parsers.add_multiworker_arguments(p)
    return p


def model_arguments(args) -> dict:
    """TrainConfig fields set by the ablation flags (`training.add_model_arguments`); only those
    given, so that the settings of a cross-validation run without them stay as they were."""
    from vtcaps_tf.train import fit as training

    out = {"flow": args.flow, "fusion": args.fusion, "use_tpn": False if args.no_tpn else None,
           "model_overrides": training.model_overrides_from_args(args)}
    return {k: v for k, v in out.items() if v not in (None, {})}


def cli_main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.local_workers:
        from vtcaps_tf.train import local_cluster

        argv = list(sys.argv[1:] if argv is None else argv)
        return local_cluster.launch("vtcaps_tf.train.crossval", argv, args.local_workers)
    from vtcaps_tf.train import multiworker
    from vtcaps_tf.train import fit as training
    from vtcaps_tf.data import dataset, features

    multi_worker = None
    if args.multi_worker:
        strategy = multiworker.start(args.collective_timeout)  # before anything else runs
        multi_worker = {"strategy": strategy, "shard": args.shard_policy,
                        "timeout": args.collective_timeout,
                        "chief": multiworker.cluster_spec()[0] == 0}

    verbose = args.verbose if args.verbose == "auto" else int(args.verbose)
    augment = dataset.AugmentConfig.none() if args.no_augment else dataset.AugmentConfig()
    try:
        summary = crossval(args.data, args.output, preset=args.preset, epochs=args.epochs,
                           batch_size=args.batch_size, val_folds=args.val_folds,
                           learning_rate=args.learning_rate, lr_schedule=args.lr_schedule,
                           augment=augment,
                           steps_per_epoch=args.steps_per_epoch, seed=args.seed, verbose=verbose,
                           **model_arguments(args),
                           log=lambda msg: print(msg, file=sys.stderr, flush=True),
                           multi_worker=multi_worker)
    except (CrossvalError, features.SchemaError, training.SetupError) as err:
        print(f"vtcaps crossval: {err}", file=sys.stderr)
        return 2
    except multiworker.WorkerFailure as err:
        print(f"vtcaps crossval: {err}", file=sys.stderr, flush=True)
        os._exit(multiworker.EXIT_COLLECTIVE_FAILED)  # the strategy's threads may wait on the peer
    m, s = summary["mean"], summary["std"]
    print(f"clip accuracy {100 * m['clip_accuracy']:.2f} ± {100 * s['clip_accuracy']:.2f}%, "
          f"video accuracy {100 * m['video_accuracy']:.2f} ± {100 * s['video_accuracy']:.2f}% "
          f"over {len(summary['folds'])} folds ({summary['num_videos']} videos)")
    print(os.path.join(args.output, "report.json"))
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
