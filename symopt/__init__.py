"""symopt in your own training script: the trial an agent runs, and the client of the service.

    import symopt

    with symopt.trial() as trial:                  # under `symopt agent SWEEP_ID -- python train.py`
        optimizer = trial.build_optimizer(model)  # the trial's optimizer stack and step sizes
        ...
        trial.report(step, loss=loss, val_loss=val_loss)
        if trial.should_prune():
            trial.prune()

The implementation lives in the client package (service/client/agent.py); this module is the
name users import. `symopt.SymoptCallback` reports a transformers Trainer to its trial.
"""

from __future__ import annotations

from typing import Any

from service.client import Client, LeaseLostError, Trial, TrialPruned
from service.client.agent import trial_from_environment as trial

__all__ = ["Client", "LeaseLostError", "SymoptCallback", "Trial", "TrialPruned", "trial"]


def __getattr__(name: str) -> Any:
    # transformers takes seconds to import: only for scripts that ask for the callback.
    if name == "SymoptCallback":
        from service.client.hf_callback import SymoptCallback

        return SymoptCallback
    raise AttributeError(f"module 'symopt' has no attribute {name!r}")
