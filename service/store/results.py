"""`JobResult`: what a finished run reported, as stored in `Job.result` and served by the API.

The scheduler builds one from a run's `result` event (symopt_core's `Result`); an agent's run has
the store make its own (store/agents.py: val losses, evals, steps, tokens, its executor and the
objective it gave). Stored as JSON, one object, exactly the keys the run reported: a row written
before a field existed, or by an agent that has no use for it, reads back and is served with the
keys it has, and nothing added. Non-finite losses are the strings "nan", "inf", "-inf" (JSON has
no such numbers), and read back as floats.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    model_serializer,
)

__all__ = ["EvalPoint", "JobResult"]


def _json_float(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


# A float that reads "nan"/"inf"/"-inf" (pydantic parses those) and writes them back so in JSON.
JsonFloat = Annotated[float, PlainSerializer(_json_float, return_type=float | str, when_used="json")]


class _Reported(BaseModel):
    """Keys a run did not report are absent, not null, in what is stored and served; keys this
    model does not know are kept (a newer worker's, an older row's)."""

    model_config = ConfigDict(extra="allow")

    @model_serializer(mode="wrap")
    def _only_reported(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if key in self.model_fields_set}


class EvalPoint(_Reported):
    step: int | None = None
    tokens: int | None = None  # training tokens consumed at `step`
    val_loss: JsonFloat | None = None


class JobResult(_Reported):
    status: str | None = Field(None, description="how the run itself ended: succeeded, diverged or cancelled")
    steps: int | None = Field(None, description="optimizer steps completed")
    tokens: int | None = Field(None, description="training tokens consumed")
    train_loss: JsonFloat | None = Field(None, description="loss of the last step")
    val_loss: JsonFloat | None = Field(None, description="the last evaluation")
    best_val_loss: JsonFloat | None = None
    best_val_step: int | None = None
    wall_time_s: JsonFloat | None = None
    tokens_per_s: JsonFloat | None = None
    diverged_at: int | None = Field(None, description="the step whose loss was not finite")
    checkpoint: str | None = Field(None, description="the newest checkpoint written")
    evals: list[EvalPoint] | None = Field(None, description="every evaluation: step, tokens, val_loss")
    executor: str | None = Field(None, description="agents: a run of a user's own script")
    objective: JsonFloat | None = Field(None, description="agents: the objective the agent reported")

    def to_json(self) -> dict[str, Any]:
        """The stored form (Job.result): JSON types, the reported keys only."""
        return self.model_dump(mode="json")
