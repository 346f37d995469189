"""A transformers Trainer as an agent on the live service: `SymoptCallback` reports its logs and
evaluations, stops it when the sweep's median pruner prunes its trial, and finishes that trial
pruned; the example script (examples/agents/train_hf_trainer.py) runs a trial under `symopt agent`.

The model is the example's tiny Qwen3-style causal LM (random weights from a config, characters as
tokens): a trial of 40 steps trains in well under a second on one thread.
"""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from transformers import Trainer

from service.client import Client, Trial
from service.client.hf_callback import SymoptCallback
from service.testing import ROOT, one_thread_env

from ..specs import tiny_job
from ..waiting import wait_for
from .live import Api

EXAMPLE = ROOT / "examples" / "agents" / "train_hf_trainer.py"
STEPS, EVERY = 40, 10
TOKENS_PER_STEP = 4 * 32  # the base's batch.size and data.seq_len (tests/specs.py): the pruner's resource

# At this scale lr 0.3 and 1.0 take the validation loss from 4.6 to about 2.3 in the first 10
# steps; 1e-6 leaves it at 4.6. The grid sampler runs its shuffled grid in order: with seed 3, the
# two good ones finish first, so the median pruner (2 startup trials) has what to compare the bad
# one with at its first evaluation (1,280 tokens, past the warmup of a tenth of the 5,120-token budget).
CHOICES = [0.3, 1.0, 1e-6]
GRID_SEED = 3
IN_ORDER = [1.0, 0.3, 1e-6]  # CHOICES as the grid sampler shuffles them with GRID_SEED


@functools.cache
def example() -> ModuleType:
    """The example script as a module: its model, character tokens and windows."""
    spec = importlib.util.spec_from_file_location("train_hf_trainer", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def agent_sweep(**fields: Any) -> dict[str, Any]:
    base = {
        **tiny_job(steps=STEPS, log_every=5),
        "model": {"family": "custom", "d_model": 32},
        "eval": {"every": EVERY, "batches": 1},
    }
    return {
        "name": "trainer",
        "base": base,
        "search_space": {"optimizer.lr": {"type": "categorical", "choices": CHOICES}},
        "n_trials": 3,
        "parallelism": 1,
        "sampler": "grid",
        "pruner": "median",
        "seed": GRID_SEED,
        "executor": "agents",
        **fields,
    }


def train(trial: Trial, callback: SymoptCallback, output: Path) -> Trainer:
    """The Trainer run of one trial, as a user writes it; returns the Trainer once it stopped."""
    script = example()
    seq_len = int(trial.spec["data"]["seq_len"])
    ids = script.encode(script.FALLBACK_TEXT)
    split = int(len(ids) * 0.9)
    model = script.tiny_model(seq_len)
    args = script.trial_arguments(trial, str(output))
    trainer = Trainer(
        model,
        args,
        train_dataset=script.Windows(ids[:split], seq_len),
        eval_dataset=script.Windows(ids[split:], seq_len, trial.batch_size),
        optimizers=(trial.build_optimizer(model), None),
        callbacks=[callback],
    )
    trainer.train()
    return trainer


def test_the_callback_stops_and_finishes_a_pruned_trial(api: Api, tmp_path: Path) -> None:
    client = Client(url=api.url, api_key=api.key)
    sweep = client.submit_sweep(agent_sweep())
    runs: list[dict[str, Any]] = []
    for trial in client.sweep(sweep.id).trials():  # until the sweep has ended
        callback = SymoptCallback(trial)
        with trial:
            trainer = train(trial, callback, tmp_path / f"trial-{trial.number}")
        runs.append(
            {
                "job": trial.job_id,
                "lr": trial.lr,
                "step": trainer.state.global_step,
                "pruned": callback.pruned,
            }
        )

    lrs = [run["lr"] for run in runs]
    assert lrs == IN_ORDER, "the grid sampler with seed 3 runs the bad lr last"
    good, bad = runs[:2], runs[2]
    assert all(run["step"] == STEPS and not run["pruned"] for run in good), runs
    assert bad["pruned"], runs
    assert bad["step"] == EVERY  # stopped by the callback at its first evaluation, not at max_steps

    trials = {t["job_id"]: t for t in client.sweep(sweep.id).list_trials()}
    assert trials[bad["job"]]["state"] == "pruned"
    assert trials[bad["job"]]["pruned_at_tokens"] == EVERY * TOKENS_PER_STEP
    assert all(trials[run["job"]]["state"] == "succeeded" for run in good), trials
    pruned_job = client.job(bad["job"]).data
    assert pruned_job["status"] == "pruned"  # a job status of its own, not "cancelled"
    reported = client.job(good[0]["job"]).metrics()
    assert {point["name"] for point in reported} == {"loss", "lr", "val_loss"}
    assert [p["step"] for p in reported if p["name"] == "loss"] == list(range(5, STEPS + 1, 5))
    assert client.sweep(sweep.id).status == "succeeded"  # the loop ends once the sweep has ended


def test_the_example_script_runs_a_trial_under_symopt_agent(api: Api, tmp_path: Path) -> None:
    client = Client(url=api.url, api_key=api.key)
    sweep = client.submit_sweep(
        agent_sweep(search_space={"optimizer.lr": {"type": "categorical", "choices": [1.0]}}, n_trials=1)
    )
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("A tale of two cities, told in characters.\n" * 200, encoding="utf-8")
    command = [sys.executable, "-m", "service.cli", "agent", sweep.id, "--count", "1", "--"]
    script = [sys.executable, str(EXAMPLE), "--data", str(corpus)]
    env = one_thread_env(SYMOPT_URL=api.url, SYMOPT_API_KEY=api.key, XDG_CONFIG_HOME=str(tmp_path / "config"))
    # The timeout only keeps a hang from blocking the suite: the run takes seconds.
    done = subprocess.run(command + script, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr

    [trial] = client.sweep(sweep.id).list_trials()
    job = client.job(trial["job_id"]).data
    assert job["status"] == "succeeded", job
    assert job["result"]["steps"] == STEPS
    assert [e["step"] for e in job["result"]["evals"]] == list(range(EVERY, STEPS + 1, EVERY))
    wait_for(lambda: sweep.refresh().done, progress=lambda: sweep.status, what="the sweep to end")
    assert sweep.status == "succeeded"
