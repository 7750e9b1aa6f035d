"""Small PNG figures for the analyses (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from lrn.analysis.gradients import GradientFlow  # noqa: E402

DPI = 90  # keeps committed PNGs small


def _positive(values: Sequence[float]) -> list[float]:
    """Vanished (exactly 0) norms cannot sit on a log axis: drop them as NaN gaps."""
    return [v if v > 0 else float("nan") for v in values]


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_gradient_flow(groups: Sequence[tuple[str, Sequence[GradientFlow]]], path: Path) -> Path:
    """One row per (title, flows) group, two log-scale panels each: ||dh_T/dx_t|| and
    ||dh_T/ds_t|| against T - t, one line per flow."""
    fig, axes = plt.subplots(len(groups), 2, figsize=(9, 3.2 * len(groups)), dpi=DPI, squeeze=False)
    for row, (title, flows) in zip(axes, groups):
        for flow in flows:
            row[0].plot(flow.distances, _positive(flow.input_norms), marker=".", label=flow.label)
            row[1].plot(flow.distances, _positive(flow.state_norms), marker=".", label=flow.label)
        for ax, what in zip(row, (r"$\|\partial h_T/\partial x_t\|$", r"$\|\partial h_T/\partial s_t\|$")):
            ax.set_yscale("log")  # x stays linear: exponential decay shows as a straight line
            ax.set_xlabel("distance T - t")
            ax.set_ylabel(what)
            ax.set_title(title, fontsize=9)
            ax.grid(True, which="major", alpha=0.3)
        row[1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return _save(fig, path)


def plot_token_weights(segments: Sequence[dict], path: Path, title: str) -> Path:
    """One heatmap per segment ({"tokens": [...], "rows": {label: weights}}): a column per token,
    a row per weight vector (e.g. per direction's final state), on a log colour scale."""
    longest = max(len(seg["tokens"]) for seg in segments)
    heights = [len(seg["rows"]) for seg in segments]
    size = (min(16.0, 5.0 + 0.45 * longest), 0.6 + sum(1.0 + 0.4 * h for h in heights))
    fig, axes = plt.subplots(len(segments), 1, squeeze=False, dpi=DPI, height_ratios=heights, figsize=size)
    vmax = max(max(max(r) for r in seg["rows"].values()) for seg in segments)
    # weights decay geometrically with distance: a log scale over 4 decades shows the far tokens
    norm = LogNorm(vmin=vmax * 1e-4, vmax=vmax, clip=True)
    for i, (ax, seg) in enumerate(zip(axes[:, 0], segments)):
        if len(segments) > 1:
            ax.set_title(f"sentence {i + 1}", fontsize=8)
        image = ax.imshow(list(seg["rows"].values()), aspect="auto", cmap="Reds", norm=norm)
        ax.set_xticks(range(len(seg["tokens"])))
        ax.set_xticklabels(seg["tokens"], rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(seg["rows"])))
        ax.set_yticklabels(list(seg["rows"]), fontsize=8)
        fig.colorbar(image, ax=ax, fraction=0.02, pad=0.01)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_equal_step_curves(curves: dict[str, dict[str, list]], path: Path, title: str, *, metric: str) -> Path:
    """Two panels against the training step, one line per cell: the (smoothed) training
    loss and the validation metric (``curves`` as lrn.compare.mean_curves makes them)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=DPI)
    for cell, c in curves.items():
        left.plot(range(1, len(c["train"]) + 1), c["train"], label=cell, linewidth=1)
        right.plot(c["valid_steps"], c["valid"], marker=".", label=cell)
    left.set_ylabel("training loss (smoothed)")
    right.set_ylabel(f"valid {metric}")
    for ax in (left, right):
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_time_to_quality(curves: dict[str, dict[str, list]], seconds_per_step: dict[str, float],
                         ttq: dict, path: Path, title: str) -> Path:
    """Validation metric against estimated training time (step x measured time per step),
    one line per cell, with the target (the reference cell's final metric) dashed."""
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=DPI)
    for cell, c in curves.items():
        ax.plot([s * seconds_per_step[cell] for s in c["valid_steps"]], c["valid"], marker=".", label=cell)
    ax.axhline(ttq["target"], color="grey", linestyle="--", linewidth=1,
               label=f"target: {ttq['reference']} final")
    ax.set_xlabel("estimated training time, s (steps x median s/step)")
    ax.set_ylabel(f"valid {ttq['metric']}")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
