"""Figures people would rather look at than tables: segmentation timelines and confusion matrices."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def timeline(path: Path, rows: Sequence[tuple[str, Sequence[str]]], classes: Sequence[str], title: str) -> Path:
    """One horizontal colour bar per (name, per-frame labels) row, e.g. ground truth above prediction."""
    colours = plt.get_cmap("tab20")
    index = {c: i for i, c in enumerate(classes)}
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 0.6 * len(rows) + 0.6), squeeze=False)
    for ax, (name, labels) in zip(axes[:, 0], rows):
        ids = np.array([index.get(lbl, -1) for lbl in labels])[None]
        rgba = np.where(ids[..., None] >= 0, colours(ids % 20), (0.85, 0.85, 0.85, 1.0))
        ax.imshow(rgba, aspect="auto", interpolation="nearest")
        ax.set_yticks([0], [name])
        ax.set_xticks([])
    present = [c for c in classes if any(c in set(labels) for _, labels in rows)]
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours(index[c] % 20)) for c in present]
    if any(lbl not in index for _, labels in rows for lbl in labels):
        handles.append(plt.Rectangle((0, 0), 1, 1, color=(0.85, 0.85, 0.85)))
        present.append("background / other")
    fig.legend(handles, present, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    axes[0, 0].set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def confusion(path: Path, matrix: np.ndarray, classes: Sequence[str], title: str) -> Path:
    """Row-normalised confusion matrix (rows: ground truth) with raw counts written in the cells."""
    matrix = np.asarray(matrix)
    norm = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    size = max(4.0, 0.5 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    for i in range(len(classes)):
        for j in range(len(classes)):
            if matrix[i, j]:
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def loss_curves(path: Path, records: Sequence[dict], title: str = "training loss") -> Path:
    """One line per loss term over steps, from `metrics.jsonl` records (validation lines skipped)."""
    skip = {"step", "lr", "logit_scale", "clips_per_s", "data_wait", "nonfinite_dropped"}
    rows = [r for r in records if "loss" in r]
    terms = [k for k in dict.fromkeys(k for r in rows for k in r)
             if k not in skip and not k.startswith(("val/", "self_sim/"))]
    fig, ax = plt.subplots(figsize=(7, 4))
    for term in terms:
        points = [(r["step"], r[term]) for r in rows if term in r]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, label=term, linewidth=2.0 if term == "loss" else 1.0)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def retrieval_examples(path: Path, rows: Sequence[tuple[str, Sequence[tuple[np.ndarray, bool]]]]) -> Path:
    """Each row: a caption, then its top-ranked clips as frame strips (uint8 [T, H, W, 3]) framed green
    when the clip matches the caption and red when not."""
    k = max(len(clips) for _, clips in rows)
    fig, axes = plt.subplots(len(rows), k, figsize=(3.2 * k, 1.3 * len(rows) + 0.4), squeeze=False)
    for r, (caption, clips) in enumerate(rows):
        for c in range(k):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(clips):
                ax.axis("off")
                continue
            frames, correct = clips[c]
            ax.imshow(np.concatenate(list(frames), axis=1))
            for spine in ax.spines.values():
                spine.set_edgecolor("tab:green" if correct else "tab:red")
                spine.set_linewidth(3)
            if c == 0:
                ax.set_title(caption if len(caption) < 90 else caption[:87] + "...", fontsize=7, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
