"""Figures of an evaluation: the confusion matrix as a matplotlib Figure, and a Figure as PNG bytes
(written beside the reports and into TensorBoard)."""

from __future__ import annotations

import numpy as np


def confusion_matrix_figure(cm, class_names, title="Confusion matrix", normalize=True):
    """A matplotlib Figure of `cm` (rows: true class), cells annotated with row percentages."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    cm = np.asarray(cm, np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    shown = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0) if normalize else cm
    k = len(class_names)
    size = max(4.0, 0.6 * k + 2.0)
    fig = Figure(figsize=(size, size), dpi=100)
    ax = fig.add_subplot()
    im = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else max(1.0, cm.max()))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(k), labels=class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), labels=class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = 0.5 * (shown.max() if shown.size else 1.0)
    for i in range(k):
        for j in range(k):
            text = f"{100 * shown[i, j]:.1f}%\n({int(cm[i, j])})" if normalize else f"{int(cm[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if shown[i, j] > threshold else "black")
    fig.tight_layout()
    return fig


def figure_to_png(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
