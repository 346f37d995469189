"""The optimizer: update rules, their registry, SymOpt, and the schedule-free wrapper."""

from __future__ import annotations

from .directions import DirectionOptions
from .layout import Layout, parse_layout
from .rules import RULES, Rule, Symmetry, get_rule
from .symopt import SCALES, SymOpt

__all__ = [
    "RULES",
    "SCALES",
    "DirectionOptions",
    "Layout",
    "Rule",
    "SymOpt",
    "Symmetry",
    "get_rule",
    "parse_layout",
]
