"""How an MoE router turns its logits into gates: softmax (shift-invariant) or sigmoid (not).

The centered router rules (ALGORITHMS.md 7) rest on R ↦ R + 1vᵀ leaving every gate unchanged.
That holds for softmax gates and for top-k taken on logits or softmax probabilities, but not for
sigmoid scores (DeepSeek-V3, GLM-4-MoE, Ergo, Llama 4, ...), where the mean row of the gradient
carries signal that centering would drop. transformers has no flag for it, so this reads:
1. a config field that chooses the score function (`scoring_func`, `expert_selection_fn`) on the
   module holding the router weight or an ancestor (the model's config);
2. else the code of the holder's class, then of its two nearest ancestors' (router class, MoE
   block), each with its bases below nn.Module and the functions of its own module it calls:
   the first whose code calls softmax or sigmoid decides. One that calls both (a choice made at
   run time), or none of the three calling either, leaves it unknown, and the classifier refuses
   rather than guessing.
Only identifiers and exact string constants count (`F.softmax`, `.sigmoid()`, ACT2FN["sigmoid"]),
never comments or docstrings.
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
from collections.abc import Sequence
from typing import Any, Literal

from torch import nn

__all__ = ["Gating", "router_gating"]

Gating = Literal["softmax", "sigmoid"]

_CONFIG_FIELDS = ("scoring_func", "expert_selection_fn")
_WORDS: dict[str, Gating] = {
    "softmax": "softmax",
    "log_softmax": "softmax",
    "sigmoid": "sigmoid",
    "logsigmoid": "sigmoid",
}
_SCANNED = 3  # the weight's module, the router around it, the block that calls it
_READ: dict[type, frozenset[Gating]] = {}


def router_gating(chain: Sequence[nn.Module], *, config: bool = True) -> Gating | None:
    """The gating of a router whose weight lives in chain[0] (chain: that module, then its
    ancestors nearest first); None when it cannot be told. config=False: the code alone (a
    gate that is not the routed experts' router, which the config's score function is about)."""
    for module in chain if config else ():
        found = _config_gating(getattr(module, "config", None))
        if found is not None:
            return found
    for module in chain[:_SCANNED]:
        words = _class_gating(type(module))
        if words:
            return next(iter(words)) if len(words) == 1 else None
    return None


def _config_gating(config: Any) -> Gating | None:
    for field in _CONFIG_FIELDS:
        value = getattr(config, field, None)
        if isinstance(value, str) and value.lower() in ("softmax", "sigmoid"):
            return value.lower()  # type: ignore[return-value]
    return None


def _class_gating(cls: type) -> frozenset[Gating]:
    # The first class of the MRO (nn.Module and torch's own layers excluded) that calls either;
    # cached per class, as reading and parsing source costs milliseconds.
    if cls not in _READ:
        _READ[cls] = frozenset()
        for klass in cls.__mro__:
            if klass is nn.Module or klass.__module__.startswith("torch."):
                break
            words = _code_words(klass)
            if words:
                _READ[cls] = frozenset(words)
                break
    return _READ[cls]


def _code_words(klass: type) -> set[Gating]:
    tree = _parse(klass)
    if tree is None:
        return set()
    found = _words(tree)
    # One call deep into the class's own module: PhiMoE's router calls `sparsemixer`, which softmaxes.
    namespace = vars(sys.modules.get(klass.__module__, inspect))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            function = namespace.get(node.func.id)
            if inspect.isfunction(function) and function.__module__ == klass.__module__:
                called = _parse(function)
                found |= _words(called) if called is not None else set()
    return found


def _parse(code: Any) -> ast.AST | None:
    try:
        return ast.parse(textwrap.dedent(inspect.getsource(code)))
    except (OSError, TypeError, SyntaxError):  # defined in a REPL or generated: nothing to read
        return None


def _words(tree: ast.AST) -> set[Gating]:
    found: set[Gating] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            word = node.attr
        elif isinstance(node, ast.Name):
            word = node.id
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            word = node.value  # ACT2FN["sigmoid"]; a docstring is never exactly one of the words
        else:
            continue
        if word in _WORDS:
            found.add(_WORDS[word])
    return found
