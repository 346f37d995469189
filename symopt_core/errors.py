"""Exceptions of symopt_core: one base, and messages that say what to do next."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["ConfigError", "ModeError", "SymoptError", "did_you_mean"]


def did_you_mean(given: object, valid: Iterable[str]) -> str:
    """ " (did you mean 'qwen3'?)" for the valid name closest to a mistyped one, else ""."""
    close = difflib.get_close_matches(str(given), list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class SymoptError(Exception):
    """Base class of every error symopt raises on purpose."""


class ConfigError(SymoptError, ValueError):
    """A bad value in an optimizer, preset, layout or job configuration."""


class ModeError(SymoptError, RuntimeError):
    """An operation was called in the wrong mode (e.g. a schedule-free step in eval mode)."""
