"""`symopt agent ID [--count N] -- COMMAND ...`: run a command once per claimed trial.

The W&B agent pattern: the agent claims a trial of an `executor: agents` sweep or study, runs
COMMAND with the trial in its environment (SYMOPT_TRIAL, read by `symopt.trial()`; SYMOPT_URL and
SYMOPT_API_KEY for the same service and key) and keeps the trial's lease alive while it runs.
When COMMAND exits without finishing its trial, the agent finishes it: succeeded on exit code 0
(from the val_loss points it reported), failed otherwise. The command dies with the agent (Linux:
PR_SET_PDEATHSIG), so a killed agent's trial is not run on by an orphan: its lease runs out and
the service offers it again. Ctrl-C stops the command, fails its trial and ends the agent.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
from typing import Any

from .remote import EXIT_BAD_INPUT, EXIT_CANCELLED, fail, remote

_PR_SET_PDEATHSIG = 1


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agent = commands.add_parser(
        "agent",
        help="run a command once per trial of an executor: agents sweep or study (symopt.trial() reads it)",
        description="Claim trials of an `executor: agents` sweep or study and run COMMAND for each, "
        "e.g. `symopt agent SWEEP_ID --count 4 -- python train.py --data ./corpus`.",
    )
    agent.add_argument("target", metavar="ID", help="a sweep's or a study's id")
    agent.add_argument(
        "--count", type=int, default=None, help="stop after this many trials (default: until done)"
    )
    agent.add_argument("--lease", type=int, default=None, metavar="SECONDS", help="lease length (5 to 3600)")
    agent.add_argument("--host", default=None, help="how the dashboard names this agent (default: host:pid)")
    # What follows `--` is the command: service/cli.py splits it off before parsing (argparse's
    # REMAINDER would also swallow the agent's own options after the ID).
    agent.set_defaults(handler=run_agent, after_dashes=None)


@remote("agent")
def run_agent(args: argparse.Namespace, client: Any) -> int:
    from ..client import NotFoundError
    from ..client.agent import TRIAL_ENV, claim_trials

    command = args.after_dashes or []
    if not command:
        return fail(
            "agent", "no command: give it after `--`, e.g. symopt agent ID -- python train.py", EXIT_BAD_INPUT
        )
    try:
        client.request("GET", f"/v1/sweeps/{args.target}")
        claim_path = f"/v1/sweeps/{args.target}/claim"
    except NotFoundError:
        client.request("GET", f"/v1/studies/{args.target}")  # a 404 here names the id as unknown
        claim_path = f"/v1/studies/{args.target}/claim"
    base_env = {**os.environ, "SYMOPT_URL": client.url, "SYMOPT_API_KEY": client.api_key}
    ran = 0
    trials = claim_trials(
        client, claim_path, count=args.count, lease_seconds=args.lease, host=args.host, heartbeat=False
    )
    for trial in trials:
        handed = {"url": client.url, "trial": trial.data}
        print(
            f"symopt agent: trial {trial.number} ({trial.job_id}): {trial.params}",
            file=sys.stderr,
            flush=True,
        )
        # The heartbeat starts once the child exists: no thread runs while the child is forked.
        try:
            child = subprocess.Popen(
                command, env={**base_env, TRIAL_ENV: json.dumps(handed)}, preexec_fn=_die_with_parent
            )
        except OSError as error:  # no such program, not executable
            trial.fail(f"symopt agent could not start {command[0]!r}: {error}")
            trials.close()
            return fail("agent", f"cannot run {command[0]!r}: {error}", EXIT_BAD_INPUT)
        trial.start_heartbeat()
        try:
            code = child.wait()
        except KeyboardInterrupt:
            _stop(child)
            trial.fail("interrupted: the agent was stopped (Ctrl-C)")
            trials.close()
            print("symopt agent: interrupted; the trial was finished as failed", file=sys.stderr)
            return EXIT_CANCELLED
        _finish_after(trial, code)
        ran += 1
    print(f"symopt agent: ran {ran} trial(s); nothing more to claim", file=sys.stderr)
    return 0


def _finish_after(trial: Any, code: int) -> None:
    """Finish what the command left open (a finished trial answers as it is)."""
    from ..client.agent import LeaseLostError

    try:
        if code == 0:
            trial.close()
        else:
            trial.fail(f"the command exited with code {code}")
    except LeaseLostError as error:
        print(f"symopt agent: trial {trial.number}: {error}", file=sys.stderr)


def _stop(child: subprocess.Popen[bytes]) -> None:
    """Ctrl-C at a terminal reaches the command too: give it a moment to finish its trial; pass
    the interrupt on if it did not get one (the agent alone was signalled), then end it."""
    for forward, wait in ((None, 5), (signal.SIGINT, 25), (signal.SIGKILL, None)):
        if forward is not None:
            child.send_signal(forward)
        try:
            child.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
        except KeyboardInterrupt:  # another Ctrl-C: stop waiting
            child.kill()
            child.wait()
            return


def _die_with_parent() -> None:
    """In the child, before exec: the kernel kills it when the agent dies (Linux only)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
