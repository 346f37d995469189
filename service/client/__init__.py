"""The Python client of the symopt service: httpx and symopt_core's spec models, nothing of the server.

from service.client import Client

client = Client()                      # $SYMOPT_URL / $SYMOPT_API_KEY, else `symopt login`'s file
job = client.submit("examples/quickstart.yaml", overrides={"steps": 200})
job.wait()                             # a progress bar, live from the server-sent events
job.metrics(["val_loss"])              # [{name, step, value}, ...]
"""

from __future__ import annotations

from .agent import LeaseLostError, Trial, TrialPruned, trial_from_environment
from .client import DEFAULT_URL, Client
from .compare import ComparedJob, Comparison, compare, plot_comparison
from .errors import (
    ApiError,
    AuthError,
    ConflictError,
    CredentialsError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ServerError,
    ValidationError,
)
from .jobs import FINAL, Job
from .progress import Progress
from .studies import Study
from .sweeps import SWEEP_FINAL, Sweep

__all__ = [
    "DEFAULT_URL",
    "FINAL",
    "SWEEP_FINAL",
    "ApiError",
    "AuthError",
    "Client",
    "ComparedJob",
    "Comparison",
    "ConflictError",
    "CredentialsError",
    "Job",
    "LeaseLostError",
    "NotFoundError",
    "PayloadTooLargeError",
    "Progress",
    "RateLimitedError",
    "ServerError",
    "Study",
    "Sweep",
    "Trial",
    "TrialPruned",
    "ValidationError",
    "compare",
    "plot_comparison",
    "trial_from_environment",
]
