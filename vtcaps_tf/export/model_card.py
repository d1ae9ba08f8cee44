"""The model card every export carries: `<version>/assets/model_card.json` (TF Serving ignores it).

It says what the model knows: the preset and classes, the data it was trained on (source, videos
and clips per split, as the preprocessing job's metadata.json records them), the training run,
the evaluation figures when an evaluation report is found, and the export date. Built from the
`.keras` file's run directory (`train_config.json` -> the data's `metadata.json`, `eval/report.json`).
"""

from __future__ import annotations

import datetime
import json
import os

from vtcaps_tf.errors import UsageError
from vtcaps_tf.utils import atomic_files

CARD_FILE = "model_card.json"
CARD_VERSION = 1
SYNTHETIC_SOURCE = "synthetic"


def _read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _evaluation_summary(report: dict, path: str) -> dict:
    out = {"report": os.path.abspath(path), "split": report.get("split"),
           "clips": report.get("num_samples")}
    for key in ("accuracy", "uar", "war", "macro_f1", "weighted_f1"):
        if key in report:
            out[key] = report[key]
    video = report.get("video")
    if isinstance(video, dict):
        out["videos"] = report.get("num_videos")
        out["video_accuracy"] = video.get("accuracy")
    return out


def build_model_card(model, model_path: str | None = None, evaluation: str | None = None) -> dict:
    """The card of `model` (built with `build_model`), read from where it was trained.

    `model_path`: the `.keras` file (its folder is the training run: `train_config.json` names
    the data); `evaluation`: a `vtcaps evaluate` report.json (default: `<run>/eval/report.json`
    when it exists). What cannot be found is null, never guessed."""
    config = getattr(model, "config", None)
    card = {
        "card_version": CARD_VERSION,
        "model": "VT-3DCapsNet",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "preset": getattr(config, "name", None),
        "classes": [str(c) for c in getattr(model, "class_names", None) or []],
        "clip_frames": getattr(config, "clip_frames", None),
        "long_frames": getattr(config, "long_frames", None),
        "image_size": getattr(config, "image_size", None),
        "trained_from": os.path.abspath(model_path) if model_path else None,
        "training": None,
        "evaluation": None,
        "synthetic_only": None,
    }
    run_dir = os.path.dirname(os.path.abspath(model_path)) if model_path else None
    train = _read_json(os.path.join(run_dir, "train_config.json")) if run_dir else None
    if train:
        data_dir = train.get("data_dir")
        meta = _read_json(os.path.join(data_dir, "metadata.json")) if data_dir else None
        card["training"] = {
            "data_dir": data_dir, "epochs": train.get("epochs"), "preset": train.get("preset"),
            "source": meta.get("source") if meta else None,
            "videos": meta.get("videos") if meta else None,
            "clips": meta.get("counts") if meta else None,
        }
        if meta and meta.get("source"):
            card["synthetic_only"] = meta["source"] == SYNTHETIC_SOURCE
    if evaluation is None and run_dir and os.path.exists(os.path.join(run_dir, "eval", "report.json")):
        evaluation = os.path.join(run_dir, "eval", "report.json")
    if evaluation:
        report = _read_json(evaluation)
        if report is None:
            raise UsageError(f"cannot read the evaluation report {evaluation!r}")
        card["evaluation"] = _evaluation_summary(report, evaluation)
    return card


def write_model_card(saved_model_dir: str, card: dict) -> str:
    assets = os.path.join(saved_model_dir, "assets")
    return atomic_files.write_json(os.path.join(assets, CARD_FILE), card)


def read_model_card(saved_model_dir: str) -> dict | None:
    """The card of an exported version, or None (exported before cards, or not a vtcaps export)."""
    return _read_json(os.path.join(saved_model_dir, "assets", CARD_FILE))


def describe(card: dict | None) -> str:
    """One line: where the model came from."""
    if not card:
        return "no model card (where it was trained is not recorded)"
    parts = [f"preset {card.get('preset')}", f"{len(card.get('classes') or [])} classes"]
    train = card.get("training") or {}
    if train.get("source"):
        videos = train.get("videos") or {}
        total = sum(v for v in videos.values() if isinstance(v, int)) if isinstance(videos, dict) else None
        parts.append(f"trained on {train['source']}" + (f" ({total} videos)" if total else ""))
    else:
        parts.append("training data not recorded")
    ev = card.get("evaluation") or {}
    if ev.get("accuracy") is not None:
        parts.append(f"{ev.get('split')} accuracy {ev['accuracy']:.3f}")
    parts.append(f"exported {str(card.get('created', '?'))[:10]}")
    return ", ".join(parts)


def synthetic_warning(card: dict | None) -> str | None:
    """The one-line warning for a model that has only seen synthetic faces, else None."""
    if card and card.get("synthetic_only"):
        return ("warning: this model was trained only on synthetic faces (vtcaps synth); on real "
                "videos its emotions are not to be trusted. Train on CK+ or AFEW (README: Real data).")
    return None
