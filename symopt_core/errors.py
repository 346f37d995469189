"""Exceptions of symopt_core: one base, and messages that say what to do next."""

from __future__ import annotations

__all__ = ["ConfigError", "ModeError", "SymoptError"]


class SymoptError(Exception):
    """Base class of every error symopt raises on purpose."""


class ConfigError(SymoptError, ValueError):
    """A bad value in an optimizer, preset, layout or job configuration."""


class ModeError(SymoptError, RuntimeError):
    """An operation was called in the wrong mode (e.g. a schedule-free step in eval mode)."""
