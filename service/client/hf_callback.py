"""`SymoptCallback`: a transformers `Trainer` run reported to its symopt trial.

    import symopt
    from transformers import Trainer

    with symopt.trial() as trial:              # under `symopt agent SWEEP_ID -- python train.py`
        trainer = Trainer(
            model,
            args,                              # eval_strategy="steps", max_steps=trial.steps, ...
            train_dataset=...,
            eval_dataset=...,
            optimizers=(trial.build_optimizer(model), None),
            callbacks=[SymoptCallback(trial)],
        )
        trainer.train()                        # stops early when the sweep's pruner says so

The callback reports the training loss and step size of each log, and the evaluation loss as the
trial's `val_loss` (what the sweep's pruner and objective read), and stops training when the
answer says stop: pruned, cancelled or diverged. At the end of training a pruned trial is finished
as pruned and a cancelled one as cancelled; success is left to the `with` block (or
`trial.finish()`). `callback.pruned` says whether the pruner stopped the run. One process reports:
the callback does not share the service's answer between the ranks of a distributed run.

This module imports transformers (seconds): `symopt.SymoptCallback` imports it only when asked.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from .agent import Trial

__all__ = ["SymoptCallback"]


class SymoptCallback(TrainerCallback):
    """Reports a Trainer's logs and evaluations to `trial` at `state.global_step`; `metric` is the
    evaluation metric reported as val_loss (lower is better)."""

    def __init__(self, trial: Trial, *, metric: str = "eval_loss") -> None:
        self.trial = trial
        self.metric = metric
        self.stopped: dict[str, Any] | None = None  # the answer that stopped training, if one did

    @property
    def pruned(self) -> bool:
        """Whether training stopped because the sweep's pruner pruned the trial."""
        return self.stopped is not None and bool(self.stopped.get("should_prune"))

    def _report(self, step: int, control: TrainerControl, **metrics: Any) -> None:
        if self.trial.finished is not None:  # finished already (by the user's code): nothing to add
            return
        answer = self.trial.report(step, **metrics)
        if answer.get("stop") and self.stopped is None:
            control.should_training_stop = True
            self.stopped = answer

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # Training logs carry `loss` (the mean since the last log); evaluation logs and the
        # final summary (`train_loss`) do not, and are left to on_evaluate or not reported.
        if not logs or "loss" not in logs:
            return
        metrics = {"loss": logs["loss"]}
        if "learning_rate" in logs:
            metrics["lr"] = logs["learning_rate"]
        # A non-finite loss ends the trial `diverged`; the answer then says stop.
        self._report(state.global_step, control, **metrics)

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if metrics is None or self.metric not in metrics:
            found = ", ".join(sorted(metrics or {})) or "none"
            raise ValueError(
                f"SymoptCallback: the evaluation has no {self.metric!r} (it has: {found}); pass "
                "SymoptCallback(trial, metric=...) naming the loss to report as val_loss"
            )
        self._report(state.global_step, control, val_loss=metrics[self.metric])

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.trial.finished is not None:
            return
        if self.trial.should_prune():
            self.trial.finish_pruned()
        elif self.stopped is not None and self.stopped.get("cancel_requested"):
            # Cancelled by a user: a failed finish of a cancelling trial ends it `cancelled` (a plain
            # finish would end it succeeded). A diverged trial has ended already: nothing to do.
            self.trial.fail("cancelled by a user while training")
