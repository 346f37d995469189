"""Run the `symopt` CLI as `pip install symopt` alone would have it: every package of an extra
(symopt_core/extras.py) is hidden from imports and from `importlib.util.find_spec`.

    python tests/without_extras.py train spec.yaml ...
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from symopt_core.extras import EXTRA_OF

HIDDEN = frozenset(EXTRA_OF)
_find_spec = importlib.util.find_spec


class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


def _hidden_find_spec(name: str, package: str | None = None) -> importlib.machinery.ModuleSpec | None:
    return None if name.split(".")[0] in HIDDEN else _find_spec(name, package)


if __name__ == "__main__":
    if any(name.split(".")[0] in HIDDEN for name in sys.modules):
        raise SystemExit("an optional package was imported before the hook")
    sys.meta_path.insert(0, _Hide())
    importlib.util.find_spec = _hidden_find_spec
    from service.cli import main

    sys.exit(main(sys.argv[1:]))
