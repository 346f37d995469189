"""What a proxy sweep found: the best lr of each width, how it moves with width, and the lr it
recommends for the full model; computed from the stored trials, so every figure can be recomputed.

- Best lr per width: the lowest objective among the width's completed trials. Where it has a tried
  lr on either side, a parabola in log(lr) through it and its two neighbours gives a refined
  optimum (`fitted_lr`, kept between the neighbours): with a grid a factor 2-3 apart, the argmin
  alone quantizes the slope to that factor. At an edge of the tried lrs the optimum may lie
  beyond it (a caveat says so) and the argmin is used.
- Slope: least squares of log(best lr) on log(width), with a Student-t interval (n - 2 degrees of
  freedom: with two widths the line passes through both points and has no interval). Slope 0 is
  what "the optimum transfers" predicts; the matrix presets' lr/sqrt(fan_in) scaling is meant to
  give it, while AdamW's optimum is expected to fall with width (muP: about width^-1 for hidden
  matrices).
- Recommendation: the fitted line extrapolated to the full width, exp(a + b·log W), with the
  t prediction interval of the line's value there (n >= 3). Caveats name a wide interval, two
  widths only, a long extrapolation and a best lr at the edge of what was tried.
- Confirmation (optional): full-size runs at the recommendation times each factor (default 1/2,
  1, 2) on the planned seeds; the result says which factor had the lowest mean objective.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from service.sweep_spec import SweepSpec
from symopt_core.proxy import model_width

from .substudies import SubStudy

__all__ = ["ConfirmRun", "LrPoint", "best_lr", "fit_slope", "recommended_lr", "transfer_result"]

# A slope interval wider than this (in log-lr per log-width) says little: the recommendation
# then leans on the confirmation runs, and a caveat says so.
WIDE_SLOPE = 1.0
# Extrapolating the line further than this factor beyond the widest proxy earns a caveat.
LONG_EXTRAPOLATION = 4.0


@dataclass(frozen=True)
class LrPoint:
    """One completed proxy trial."""

    lr: float
    objective: float
    job_id: str


@dataclass(frozen=True)
class ConfirmRun:
    """One full-size confirmation run (objective None until it succeeded with one)."""

    number: int
    factor: float
    lr: float
    seed: int
    job_id: str
    status: str
    objective: float | None


def best_lr(points: Sequence[LrPoint]) -> dict[str, Any] | None:
    """The argmin trial and its parabola-refined lr (module docstring); None without points."""
    if not points:
        return None
    ordered = sorted(points, key=lambda p: p.lr)
    i = min(range(len(ordered)), key=lambda k: ordered[k].objective)
    best = ordered[i]
    at_edge = len(ordered) < 3 or i in (0, len(ordered) - 1)
    fitted = best.lr
    if not at_edge:
        (x0, y0), (x1, y1), (x2, y2) = ((math.log(p.lr), p.objective) for p in ordered[i - 1 : i + 2])
        # Vertex of the parabola through three points (Lagrange form's derivative set to 0).
        denominator = (x0 - x1) * (x0 - x2) * (x1 - x2)
        a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denominator if denominator else 0.0
        b = (
            (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / denominator
            if denominator
            else 0.0
        )
        if a > 0:  # convex: a minimum between the neighbours
            fitted = math.exp(min(x2, max(x0, -b / (2 * a))))
    return {
        "lr": best.lr,
        "objective": best.objective,
        "job_id": best.job_id,
        "fitted_lr": fitted,
        "at_edge": at_edge,
        "edge": None if not at_edge else ("low" if i == 0 else "high" if i == len(ordered) - 1 else None),
        "trials": len(ordered),
    }


def fit_slope(widths: Sequence[float], lrs: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """log(lr) = intercept + slope·log(width) by least squares, with the slope's t interval and the
    residual spread the prediction interval needs (None where n = 2 leaves no degree of freedom)."""
    x, y = np.log(np.asarray(widths, dtype=np.float64)), np.log(np.asarray(lrs, dtype=np.float64))
    n = int(x.size)
    x_mean, sxx = float(x.mean()), float(((x - x.mean()) ** 2).sum())
    slope = float(((x - x_mean) * (y - y.mean())).sum() / sxx)
    intercept = float(y.mean() - slope * x_mean)
    fit: dict[str, Any] = {
        "slope": slope,
        "intercept": intercept,
        "n": n,
        "confidence": confidence,
        "low": None,
        "high": None,
        "residual_sd": None,
        "x_mean": x_mean,
        "sxx": sxx,
    }
    if n >= 3:
        residuals = y - (intercept + slope * x)
        sd = math.sqrt(float((residuals**2).sum()) / (n - 2))
        half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 2)) * sd / math.sqrt(sxx)
        fit.update(low=slope - half, high=slope + half, residual_sd=sd)
    return fit


def _predict(fit: dict[str, Any], width: float) -> tuple[float, float | None, float | None]:
    """The line's lr at `width`, with the t interval of the line's value there (n >= 3)."""
    x0 = math.log(width)
    value = fit["intercept"] + fit["slope"] * x0
    if fit["residual_sd"] is None:
        return math.exp(value), None, None
    n, sd = fit["n"], fit["residual_sd"]
    error = sd * math.sqrt(1 / n + (x0 - fit["x_mean"]) ** 2 / fit["sxx"])
    half = float(scipy_stats.t.ppf(0.5 + fit["confidence"] / 2, n - 2)) * error
    return math.exp(value), math.exp(value - half), math.exp(value + half)


def _verdict(preset: str, fit: dict[str, Any]) -> str:
    slope, n = fit["slope"], fit["n"]
    if fit["low"] is None:
        return (
            f"{preset}: best lr ∝ width^{slope:+.2f} through {n} widths (no interval with two widths: "
            "add a third to test whether the optimum moves)"
        )
    low, high, level = fit["low"], fit["high"], f"{fit['confidence']:.0%}"
    if low <= 0 <= high and high - low > WIDE_SLOPE:
        word = "too uncertain to say whether the optimum moves"
    elif low <= 0 <= high:
        word = "consistent with an optimum that stays put"
    else:
        word = "the optimum moves with width" + (" (falls)" if slope < 0 else " (rises)")
    interval = f"{level} t interval [{low:+.2f}, {high:+.2f}]"
    return f"{preset}: best lr ∝ width^{slope:+.2f} ({interval}, {n} widths): {word}"


def _confirmation(runs: Sequence[ConfirmRun], planned: int) -> dict[str, Any]:
    by_factor: dict[float, list[ConfirmRun]] = {}
    for run in runs:
        by_factor.setdefault(run.factor, []).append(run)
    summary: list[dict[str, Any]] = []
    for factor, mine in sorted(by_factor.items()):
        values = [r.objective for r in mine if r.objective is not None]
        summary.append(
            {
                "factor": factor,
                "lr": mine[0].lr,
                "objectives": values,
                "mean": sum(values) / len(values) if values else None,
                "runs": len(mine),
            }
        )
    done = len(runs) == planned and all(r.status in _TERMINAL for r in runs)
    scored = [s for s in summary if s["mean"] is not None]
    best = min(scored, key=lambda s: s["mean"])["factor"] if done and scored else None
    return {
        "planned": planned,
        "created": len(runs),
        "finished": sum(1 for r in runs if r.status in _TERMINAL),
        "runs": [r.__dict__ for r in sorted(runs, key=lambda r: r.number)],
        "by_factor": summary,
        "best_factor": best,
        "recommended_was_best": None if best is None else best == 1.0,
    }


_TERMINAL = frozenset({"succeeded", "failed", "cancelled", "diverged", "pruned"})


def _preset_result(
    preset: str,
    subs: Sequence[SubStudy],
    points: Mapping[str, Sequence[LrPoint]],
    full_width: int,
    confidence: float,
) -> dict[str, Any]:
    sizes: list[dict[str, Any]] = []
    caveats: list[str] = []
    for sub in sorted(subs, key=lambda s: s.proxy.width if s.proxy else 0):
        assert sub.proxy is not None
        mine = points.get(sub.name, [])
        best = best_lr(mine)
        sizes.append(
            {
                "label": sub.proxy.label,
                "width": sub.proxy.width,
                "layers": sub.proxy.layers,
                "width_factor": sub.proxy.width_factor,
                "study": sub.name,
                "trials": [{"lr": p.lr, "objective": p.objective, "job_id": p.job_id} for p in mine],
                "best": best,
            }
        )
        if best is not None and best["at_edge"] and best["trials"] >= 2:
            caveats.append(
                f"{preset} at {sub.proxy.label}: the best lr ({best['lr']:.3g}) is the "
                f"{best['edge'] or 'only'} end of the lrs tried; the optimum may lie beyond it: widen the "
                "range"
            )
    found = [s for s in sizes if s["best"] is not None]
    result: dict[str, Any] = {"preset": preset, "full_width": full_width, "sizes": sizes, "caveats": caveats}
    if len(found) < 2:
        result.update(
            slope=None, recommendation=None, verdict=f"{preset}: fewer than two widths have a best lr yet"
        )
        return result
    widths: list[int] = [s["width"] for s in found]
    fit = fit_slope(widths, [s["best"]["fitted_lr"] for s in found], confidence)
    lr, low, high = _predict(fit, full_width)
    public_fit = {k: fit[k] for k in ("slope", "intercept", "n", "confidence", "low", "high", "residual_sd")}
    result["slope"] = public_fit
    result["verdict"] = _verdict(preset, fit)
    result["recommendation"] = {
        "lr": lr,
        "low": low,
        "high": high,
        "width": full_width,
        "settings": {"optimizer.preset": preset, "optimizer.lr": lr},
        "rule": f"the fitted line extrapolated from widths {min(widths)}..{max(widths)} to {full_width}",
    }
    if fit["low"] is None:
        caveats.append(f"{preset}: two widths give a slope without an interval; a third width would test it")
    elif fit["high"] - fit["low"] > WIDE_SLOPE:
        caveats.append(
            f"{preset}: the slope's interval is wide ([{fit['low']:+.2f}, {fit['high']:+.2f}]): the "
            "recommended lr rests on noisy optima; more trials per width, or the confirmation runs, settle it"
        )
    if full_width > LONG_EXTRAPOLATION * max(widths):
        caveats.append(
            f"{preset}: the recommendation extrapolates {full_width / max(widths):.0f}x beyond the widest "
            f"proxy ({max(widths)}); a proxy closer to full width shortens the extrapolation"
        )
    return result


def transfer_result(
    spec: SweepSpec,
    subs: Mapping[str, SubStudy],
    points: Mapping[str, Sequence[LrPoint]],
    confirmations: Mapping[str, Sequence[ConfirmRun]],
    *,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """{presets: [per preset: sizes with their trials and best, slope, verdict, recommendation,
    caveats, confirmation]}; `points` are the completed trials by Optuna study, `confirmations`
    the full-size runs by preset."""
    if spec.proxy is None:
        raise ValueError("transfer_result needs a proxy sweep")
    full_width = model_width(spec.base)
    by_preset: dict[str, list[SubStudy]] = {}
    for sub in subs.values():
        by_preset.setdefault(sub.tuned_preset(), []).append(sub)
    confirm = spec.proxy.confirm
    planned = len(confirm.factors) * len(confirm.seeds_for(spec.base.seed)) if confirm else 0
    presets = []
    for preset, mine in by_preset.items():
        entry = _preset_result(preset, mine, points, full_width, confidence)
        entry["confirmation"] = _confirmation(confirmations.get(preset, []), planned) if confirm else None
        presets.append(entry)
    return {"full_width": full_width, "objective": spec.objective, "presets": presets}


def recommended_lr(result: Mapping[str, Any], preset: str) -> float | None:
    """The recommended full-size lr of `preset` in a transfer result, or None."""
    for entry in result["presets"]:
        if entry["preset"] == preset and entry.get("recommendation"):
            return float(entry["recommendation"]["lr"])
    return None
