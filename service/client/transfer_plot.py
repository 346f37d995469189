"""The transfer plot of a proxy sweep: objective against lr, one curve per width, one panel per
preset, with each width's best lr marked and the recommended full-size lr as a dashed line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_transfer"]


def plot_transfer(entries: Sequence[dict[str, Any]], path: Path, *, title: str = "") -> Path:
    """`entries`: a transfer result's `presets` (GET /v1/sweeps/{id}/transfer), or a proxy study's
    candidates' `tuned.transfer`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    figure, panels = plt.subplots(
        1, max(1, len(entries)), figsize=(4.6 * max(1, len(entries)), 4), squeeze=False
    )
    for axes, entry in zip(panels[0], entries, strict=False):
        for size in entry["sizes"]:
            trials = sorted(size["trials"], key=lambda t: t["lr"])
            if not trials:
                continue
            (line,) = axes.plot(
                [t["lr"] for t in trials],
                [t["objective"] for t in trials],
                "o-",
                label=f"width {size['width']}",
            )
            best = size["best"]
            if best is not None:
                axes.axvline(best["fitted_lr"], color=line.get_color(), alpha=0.35, linewidth=1)
        recommendation = entry.get("recommendation")
        if recommendation:
            axes.axvline(
                recommendation["lr"],
                color="black",
                linestyle="--",
                linewidth=1,
                label=f"recommended at {recommendation['width']}",
            )
        slope = entry.get("slope")
        subtitle = entry.get("name") or entry["preset"]
        if slope:
            interval = "" if slope["low"] is None else f" [{slope['low']:+.2f}, {slope['high']:+.2f}]"
            subtitle += f": lr ∝ width^{slope['slope']:+.2f}{interval}"
        axes.set_title(subtitle, fontsize=10)
        axes.set_xscale("log")
        axes.xaxis.set_minor_formatter(NullFormatter())  # 2x10^-2 labels between decades overlap
        axes.set_xlabel("learning rate")
        axes.set_ylabel("objective")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
