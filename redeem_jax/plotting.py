"""Plots of run histories (matplotlib, headless-safe)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["plot_history", "plot_comparison", "plot_partition", "annotated_heatmap"]


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, path, dpi: int = 110):
    fig.tight_layout()
    if path is not None:  # saved figures are closed; returned ones stay for notebooks
        fig.savefig(path, dpi=dpi)
        _plt().close(fig)
    return fig


def _col(rows: Sequence[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["round"], r[key]) for r in rows if key in r and r[key] is not None]
    if not pts:
        return np.array([]), np.array([])
    x, y = zip(*pts)
    return np.asarray(x, float), np.asarray(y, float)


def plot_history(rows: Sequence[dict], path: str | Path | None = None, title: str = ""):
    """Four panels: test accuracy (averaged model, with the min–max band over nodes), test loss,
    training loss, and consensus distance (1/n)Σ‖xᵢ − x̄‖² on a log scale. Returns the figure."""
    plt = _plt()
    has_acc = any("test_accuracy" in r for r in rows)
    fig, axes = plt.subplots(1, 4 if has_acc else 3, figsize=(16 if has_acc else 12, 3.6))
    axes = list(axes)
    if has_acc:
        ax = axes.pop(0)
        x, y = _col(rows, "test_accuracy")
        ax.plot(x, y, label="averaged model", color="C0")
        _, lo = _col(rows, "node_test_accuracy_min")
        _, hi = _col(rows, "node_test_accuracy_max")
        _, mean = _col(rows, "node_test_accuracy_mean")
        if lo.size == x.size:
            ax.fill_between(x, lo, hi, alpha=0.25, color="C1", label="nodes (min–max)")
            ax.plot(x, mean, color="C1", lw=1, label="nodes (mean)")
        ax.set(xlabel="round", ylabel="test accuracy", title="accuracy")
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(alpha=0.3)
    for ax, key, label, log in zip(
        axes,
        ("test_loss", "train_loss", "consensus_distance"),
        ("test loss (averaged model)", "train loss (nodes' mean)", "consensus distance"),
        (False, False, True),
    ):
        x, y = _col(rows, key)
        if log:  # a common start gives distance 0 at round 0: nothing to draw on a log axis
            x, y = x[y > 0], y[y > 0]
            ax.set_yscale("log")
        ax.plot(x, y, color="C0")
        ax.set(xlabel="round", title=label)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _finish(fig, path)


def plot_comparison(histories: Mapping[str, Sequence[dict]], path: str | Path | None = None, title: str = ""):
    """One curve per run (runs keyed by label): the honest nodes' own test accuracy (mean, with
    the min–max band), the averaged model's accuracy, and the consensus distance. Falls back
    to losses when the task has no accuracy."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    any_acc = any("test_accuracy" in r for rows in histories.values() for r in rows)
    metric = "accuracy" if any_acc else "loss"
    for i, (label, rows) in enumerate(histories.items()):
        color = f"C{i % 10}"
        x, mean = _col(rows, f"node_test_{metric}_mean")
        _, lo = _col(rows, f"node_test_{metric}_min")
        _, hi = _col(rows, f"node_test_{metric}_max")
        axes[0].plot(x, mean, label=label, color=color)
        if lo.size == x.size and x.size:
            axes[0].fill_between(x, lo, hi, color=color, alpha=0.15)
        x, y = _col(rows, f"test_{metric}")
        axes[1].plot(x, y, label=label, color=color)
        x, y = _col(rows, "consensus_distance")
        keep = np.isfinite(y) & (y > 0)
        axes[2].plot(x[keep], y[keep], label=label, color=color)
    axes[0].set(xlabel="round", ylabel=f"test {metric}", title="honest nodes' own models (mean, min–max)")
    axes[1].set(xlabel="round", title="averaged honest model")
    axes[2].set(xlabel="round", title="consensus distance (honest)", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    return _finish(fig, path)


def plot_partition(summary, path: str | Path | None = None):
    """The label histogram per node of a partition (``rj.data.PartitionSummary``), saved to ``path``."""
    _plt()
    return _finish(summary.plot().figure, path, dpi=100)


def annotated_heatmap(ax, values: np.ndarray, fontsize: int = 8):
    """Accuracy-style heatmap on ``ax`` (0 to 1, viridis) with each cell's value written in it;
    NaN cells (not run) are drawn as 0 and marked "—". Returns the image for a colorbar."""
    values = np.asarray(values, float)
    im = ax.imshow(np.nan_to_num(values, nan=0.0), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for (i, k), v in np.ndenumerate(values):
        ax.text(
            k,
            i,
            "—" if np.isnan(v) else f"{v:.2f}",
            ha="center",
            va="center",
            fontsize=fontsize,
            color="white" if (np.isnan(v) or v < 0.5) else "black",
        )
    return im
