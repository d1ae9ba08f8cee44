"""Classification metrics in numpy with the standard definitions (paper section 4.2.2).

The paper prints recall as TP / (TP + TN); that is a typo: recall here is TP / (TP + FN).

Conventions (scikit-learn's, with `labels=` set to the classes present in `y_true`):
- a ratio whose denominator is zero counts as 0;
- the macro averages (macro precision, recall, F1) and UAR (unweighted average recall, "balanced
  accuracy", = macro recall) are all taken over the same classes: those present in the true
  labels. A class with no true sample (CK+'s contempt missing from a fold) has no recall to
  average; it is listed under `absent_classes`, keeps its row and column in the confusion matrix
  (a prediction of it still counts there, and against the recall of the sample's true class),
  and its per-class figures stay in `per_class` (0 where undefined);
- WAR (weighted average recall) equals accuracy; weighted F1 weights by support, so absent
  classes weigh nothing in it.
The clip-level and video-level reports of `vtcaps evaluate` and the pooled figures of
`vtcaps crossval` (confusion matrices summed over folds) all follow them (`summary_from_confusion`).
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Counts [C, C]: rows are the true class, columns the predicted class."""
    y_true = np.asarray(y_true, np.int64).reshape(-1)
    y_pred = np.asarray(y_pred, np.int64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.shape[0]} vs {y_pred.shape[0]}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} holds a class index outside [0, {num_classes})")
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def _safe_divide(num, den):
    num = np.asarray(num, np.float64)
    den = np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def precision_recall_f1(cm: np.ndarray):
    """Per-class (precision, recall, f1, support) arrays from a confusion matrix."""
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)  # TP + FP
    support = cm.sum(axis=1)  # TP + FN
    precision = _safe_divide(tp, predicted)
    recall = _safe_divide(tp, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    return precision, recall, f1, support.astype(np.int64)


def summary_from_confusion(cm, class_names) -> dict:
    """The figures of a confusion matrix [C, C] (rows true, columns predicted) under the module's
    conventions, as plain Python numbers (JSON-ready).

    Keys: num_samples, accuracy, war, uar, macro_precision, macro_recall, macro_f1, weighted_f1,
    absent_classes (no true sample; left out of the macro averages and UAR), per_class {name:
    {precision, recall, f1, support}}, classes, confusion_matrix (list of rows).
    """
    class_names = [str(c) for c in class_names]
    cm = np.asarray(cm, np.int64)
    if cm.shape != (len(class_names), len(class_names)):
        raise ValueError(f"a confusion matrix of {len(class_names)} classes is "
                         f"{len(class_names)}x{len(class_names)}, got {cm.shape}")
    precision, recall, f1, support = precision_recall_f1(cm)
    total = int(cm.sum())
    present = support > 0

    def macro(values) -> float:
        return float(values[present].mean()) if present.any() else 0.0

    accuracy = float(np.trace(cm) / total) if total else 0.0
    return {
        "num_samples": total,
        "accuracy": accuracy,
        "war": accuracy,
        "uar": macro(recall),
        "macro_precision": macro(precision),
        "macro_recall": macro(recall),
        "macro_f1": macro(f1),
        "weighted_f1": float((f1 * support).sum() / total) if total else 0.0,
        "absent_classes": [name for name, p in zip(class_names, present) if not p],
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
        },
        "classes": class_names,
        "confusion_matrix": cm.tolist(),
    }


def classification_report(y_true, y_pred, class_names) -> dict:
    """Everything `vtcaps evaluate` reports for one level (see `summary_from_confusion`)."""
    cm = confusion_matrix(y_true, y_pred, len(class_names))
    return summary_from_confusion(cm, class_names)


def video_level(video_ids, labels, probabilities):
    """Clip results -> one result per video: (video ids in first-seen order, labels [V],
    probabilities [V, C]). A video's probabilities are the mean over its clips (its prediction is
    their argmax); its label is its clips' label, which must agree."""
    video_ids = [v.decode() if isinstance(v, bytes) else str(v) for v in video_ids]
    labels = np.asarray(labels, np.int64).reshape(-1)
    probabilities = np.asarray(probabilities, np.float64)
    if not (len(video_ids) == len(labels) == len(probabilities)):
        raise ValueError("video_ids, labels and probabilities differ in length")
    order = list(dict.fromkeys(video_ids))
    index = {v: i for i, v in enumerate(order)}
    rows = np.array([index[v] for v in video_ids], np.int64)
    sums = np.zeros((len(order), probabilities.shape[-1]), np.float64)
    np.add.at(sums, rows, probabilities)
    counts = np.bincount(rows, minlength=len(order))
    video_labels = np.full(len(order), -1, np.int64)
    for r, y in zip(rows, labels):
        if video_labels[r] not in (-1, y):
            raise ValueError(f"the clips of video {order[r]!r} carry different labels")
        video_labels[r] = y
    return order, video_labels, sums / counts[:, None]
