"""SymOpt's step and the training loop ask strategy objects; neither tests a mode (issue 28).

The reference/batched/distributed/FSDP choice belongs to SymOpt's engine (optim/engines.py,
chosen once in the constructor), the single/DDP/FSDP choice to the loop's Parallelism object
(training/parallel.py). A new kind of parallelism is a new class there, not a flag tested here.
"""

from __future__ import annotations

import inspect
import re

from symopt_core.optim import symopt
from symopt_core.training import loop

# How a mode test reads: a flag, a DTensor check, a process-group query, a strategy name.
OPTIMIZER_MODES = re.compile(
    r"\bbatched\b|\bshard\b|process_group|record_work|is_sharded|\blocal\(|local_rows|gather_rows"
    r"|torch\.distributed|\bdist\.|foreach"
)
LOOP_MODES = re.compile(
    r"parallel is (not )?None|\bddp\b|\.fsdp\b|DistributedDataParallel|fully_shard|shard_model"
    r"|is_initialized|strategy\s*==|world_size\s*[<>]|\bdist\."
)


def _code(source: str) -> str:
    """`source` without comments and docstrings: prose may name the modes."""
    source = re.sub(r'"""(.|\n)*?"""', "", source)
    return re.sub(r"#.*", "", source)


def test_symopt_step_hands_every_mode_to_its_engine() -> None:
    methods = [
        member
        for name, member in vars(symopt.SymOpt).items()
        if name != "__init__" and (inspect.isfunction(member) or isinstance(member, property))
    ]
    helpers = [
        f
        for name, f in vars(symopt).items()
        if inspect.isfunction(f) and f.__module__ == symopt.__name__ and name != "_engine"
    ]
    for function in [*methods, *helpers]:
        target = function.fget if isinstance(function, property) else function
        found = OPTIMIZER_MODES.findall(_code(inspect.getsource(target)))
        assert not found, f"{target.__qualname__} tests a mode: {found}"


def test_the_training_loop_asks_its_parallelism_object() -> None:
    found = [match.group(0) for match in LOOP_MODES.finditer(_code(inspect.getsource(loop)))]
    assert not found, f"training/loop.py tests the parallel mode: {found}"
    lines = len(inspect.getsourcelines(loop.train)[0])
    assert lines < 50, f"train() is {lines} lines"
