"""The Optuna studies of a sweep: one per compared preset and, for a proxy sweep, per proxy size.

A proxy sweep tunes every (preset, width) pair with the same budget in a study of its own, so
each width's best lr is found by its own search (a sampler sharing one study across widths would
read one width's losses as evidence about another's). Each study's trials vary the proxy's job,
its model shrunk by symopt_core.proxy. The confirmation runs at full size are jobs of the sweep
under a `<preset>@full` key, with no Optuna study: their lrs are planned, not sampled.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.sweep_spec import SweepSpec
from symopt_core.proxy import ProxySize, proxy_sizes
from symopt_core.spec import JobSpec

__all__ = ["FULL", "SubStudy", "confirm_key", "sub_studies"]

FULL = "full"  # the label of the confirmation runs at the base job's size


@dataclass(frozen=True)
class SubStudy:
    name: str  # the Optuna study
    preset: str | None  # the compared preset; None: the base job's own
    proxy: ProxySize | None  # the shrunk size, for a proxy sweep
    base: JobSpec  # the job its trials vary

    @property
    def space_key(self) -> str:
        """Its key in the sweep's resolved_space: the preset (or "default"), `@` the proxy's label."""
        key = self.preset or "default"
        return f"{key}@{self.proxy.label}" if self.proxy is not None else key

    def tuned_preset(self) -> str:
        return self.preset or self.base.optimizer.preset


def sub_studies(prefix: str, spec: SweepSpec) -> dict[str, SubStudy]:
    """{Optuna study name: SubStudy}, in the order the controller asks them (round-robin)."""
    presets: list[str | None] = [*spec.presets] if spec.presets else [None]
    if spec.proxy is None:
        if not spec.presets:
            return {prefix: SubStudy(prefix, None, None, spec.base)}
        return {f"{prefix}.{p}": SubStudy(f"{prefix}.{p}", p, None, spec.base) for p in presets}
    found = {}
    for size, base in proxy_sizes(spec.base, spec.proxy):
        for preset in presets:
            name = f"{prefix}.{preset or spec.base.optimizer.preset}@{size.label}"
            found[name] = SubStudy(name, preset, size, base)
    return found


def confirm_key(prefix: str, preset: str) -> str:
    """The trial_study of a preset's confirmation runs (job numbers: factor-major, then seed)."""
    return f"{prefix}.{preset}@{FULL}"
