"""A study's report: Markdown with PNG figures, to paste into a paper or a pull request.

report.md         the setup, the result table, the verdicts (against the baseline, then between
                  the other candidates), the tuned hyperparameters
curves.png        validation loss against tokens: each candidate's mean over seeds, min-max band
tuning-<c>.png    each candidate's tuning sweep: objective against learning rate (pruned marked)
transfer.png      a proxy study's transfer plot: objective against lr, one curve per proxy width,
                  one panel per candidate, the recommended full-size lr dashed
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["write_report"]


def _number(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 else f"{value:.{digits}f}"
    return str(value)


def _count(value: Any) -> str:
    """A count (tokens) with thousands separators; a mean over seeds is rounded to a whole number."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{round(float(value)):,}"


def _model(model: dict[str, Any]) -> str:
    """`gpt2` small, or `gpt2` n_layers=4, n_heads=4, d_model=128 for explicit dims."""
    if model.get("size"):
        return f"`{model.get('family')}` {model['size']}"
    dims = ", ".join(f"{k}={v}" for k, v in model.items() if k not in ("family", "size") and v is not None)
    return f"`{model.get('family')}` {dims}".rstrip()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(result: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for candidate in result["candidates"]:
        curve = candidate["curve"]
        if not curve["steps"]:
            continue
        (line,) = axes.plot(
            curve["tokens"], curve["mean"], label=f"{candidate['name']} (mean of {len(candidate['runs'])})"
        )
        axes.fill_between(curve["tokens"], curve["min"], curve["max"], color=line.get_color(), alpha=0.2)
    axes.set_xlabel("training tokens")
    axes.set_ylabel("validation loss")
    axes.set_title("validation loss over seeds (band: min to max)")
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:  # no candidate has a curve yet: nothing to name
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_tuning(name: str, trials: list[dict[str, Any]], path: Path) -> Path:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    for state, marker in (("succeeded", "o"), ("pruned", "x")):
        points = [
            (t["params"].get("optimizer.lr"), t["objective"])
            for t in trials
            if t["state"] == state and t["objective"] is not None and t["params"].get("optimizer.lr")
        ]
        if points:
            axes.scatter(*zip(*points, strict=True), marker=marker, label=state)
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("objective")
    axes.set_title(f"tuning {name}")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _transfer_section(result: dict[str, Any], directory: Path) -> list[str]:
    """A proxy study's tuning: each candidate's best lr per width, the slope and the recommendation
    its confirmation runs used, and the transfer plot."""
    from .transfer_plot import plot_transfer

    entries = [
        {**c["tuned"]["transfer"], "name": c["name"]}
        for c in result["candidates"]
        if (c.get("tuned") or {}).get("transfer")
    ]
    if not entries:
        return []
    lines = [
        "## Transfer from the proxies",
        "",
        "| candidate | best lr per width | slope of log lr on log width | recommended lr at full width |",
        "|---|---|---|---|",
    ]
    for entry in entries:
        bests = ", ".join(
            f"{size['width']}: {_number((size['best'] or {}).get('fitted_lr'), 3)}" for size in entry["sizes"]
        )
        slope = entry.get("slope") or {}
        interval = "" if slope.get("low") is None else f" [{slope['low']:+.2f}, {slope['high']:+.2f}]"
        slope_text = f"{slope['slope']:+.2f}{interval}" if slope else "-"
        recommended = (entry.get("recommendation") or {}).get("lr")
        lines.append(f"| {entry['name']} | {bests} | {slope_text} | {_number(recommended, 3)} |")
    lines += [""] + [f"- {entry['verdict']}" for entry in entries]
    lines += [f"- {caveat}" for entry in entries for caveat in entry.get("caveats", [])]
    picture = plot_transfer(entries, directory / "transfer.png", title="objective against lr per proxy width")
    return [*lines, "", f"![transfer]({picture.name})", ""]


def write_report(
    study: dict[str, Any], sweeps: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]], directory: Path
) -> Path:
    """`study` as the API returns it; `sweeps[candidate]` = (sweep, its trials)."""
    directory.mkdir(parents=True, exist_ok=True)
    spec, result = study["spec"], study["result"] or {"candidates": [], "verdicts": []}
    base, tuning = spec["base"], spec.get("tuning", {})
    model = base["model"]
    space = f"`{tuning['search_space']}`" if tuning.get("search_space") else "auto"
    lines = [
        f"# Study {study['name'] or study['id']}",
        "",
        f"Status **{study['status']}** ({study['stage']}). Model {_model(model)}, corpus "
        f"`{base.get('data', {}).get('corpus', 'shakespeare')}`, {base.get('steps')} steps per run.",
        f"Objective `{result.get('objective', spec.get('objective'))}` (lower is better); baseline "
        f"`{result.get('baseline')}`; confirmation seeds {result.get('seeds')}.",
        f"Tuning: {tuning.get('n_trials', 8)} trials per candidate, "
        f"sampler `{tuning.get('sampler', 'tpe')}`, pruner `{tuning.get('pruner', 'median')}`, "
        f"search space {space}.",
        "",
        "## Result",
        "",
        "| candidate | tuned params | objective mean | std | "
        f"{100 * result.get('statistics', {}).get('confidence', 0.95):g}% CI (bootstrap) | "
        "t interval | tokens to target | runs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for candidate in result["candidates"]:
        summary = candidate["summary"] or {}
        tuned = candidate["tuned"] or {}
        params = ", ".join(f"{k} = {_number(v)}" for k, v in (tuned.get("params") or {}).items()) or "-"
        boot, t = summary.get("bootstrap") or {}, summary.get("t") or {}
        reach = candidate.get("tokens_to_target") or {}
        cells = [
            candidate["name"],
            params,
            _number(summary.get("mean")),
            _number(summary.get("std")),
            f"[{_number(boot.get('low'))}, {_number(boot.get('high'))}]",
            f"[{_number(t.get('low'))}, {_number(t.get('high'))}]",
            f"{_count(reach.get('mean'))} ({reach.get('reached', 0)}/{reach.get('runs', 0)})",
            str(len(candidate["runs"])),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Tokens to target: first evaluation at or below {_number(result.get('target_loss'))}.", ""]
    lines += ["## Verdicts", ""] + [f"- {verdict}" for verdict in result["verdicts"]] + [""]
    pairwise = result.get("pairwise_verdicts", [])  # absent from results stored before it existed
    if pairwise:
        lines += ["Between the other candidates:", ""] + [f"- {verdict}" for verdict in pairwise] + [""]
    caveats = result.get("caveats", [])  # absent from results stored before it existed
    if caveats:
        lines += ["### What these verdicts rest on", ""] + [f"- {caveat}" for caveat in caveats] + [""]
    lines += [
        "A difference is called only when both the bootstrap and the t interval of the paired "
        "(same-seed) differences exclude zero.",
        "",
        *_transfer_section(result, directory),
        "## Curves",
        "",
        f"![validation loss]({plot_curves(result, directory / 'curves.png').name})",
        "",
        "## Tuning",
        "",
    ]
    for name, (sweep, trials) in sweeps.items():
        picture = plot_tuning(name, trials, directory / f"tuning-{name}.png")
        lines += [
            f"{name}: sweep `{sweep['id']}`, {sweep['trials_finished']}/{sweep['n_trials']} trials.",
            "",
        ]
        lines += [f"![tuning {name}]({picture.name})", ""]
    target = directory / "report.md"
    target.write_text("\n".join(lines))
    return target
