"""The worker-to-scheduler boundary's values: `Event` (to_dict / from_dict, `Event.failure`) and
`RunRequest` (built once by the scheduler, pickled through Ray and the warm process to `train`)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from symopt_core.assets import Assets
from symopt_core.errors import ConfigError
from symopt_core.training import Event, RunRequest, train
from symopt_core.training.events import EVENT_KINDS


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_every_kind_round_trips_through_its_dict(kind: str) -> None:
    data: dict[str, Any] = {"type": "E", "message": "m", "traceback": []} if kind == "error" else {"x": 1.5}
    event = Event(kind, 3, data)  # type: ignore[arg-type]
    assert Event.from_dict(event.to_dict()) == event


@pytest.mark.parametrize(
    ("wire", "named"),
    [
        ([("kind", "log")], "expected a dict"),
        ({"kind": "log", "data": {}}, "no step"),
        ({"kind": "log", "step": 0, "data": {}, "when": 1}, "unknown field(s) when"),
        ({"kind": "metric", "step": 0, "data": {}}, "Invalid event kind: 'metric'"),
        ({"kind": "log", "step": "3", "data": {}}, "Invalid event step: '3'"),
        ({"kind": "log", "step": True, "data": {}}, "Invalid event step: True"),
        ({"kind": "log", "step": 0, "data": {1: "x"}}, "Invalid event data"),
        ({"kind": "error", "step": -1, "data": {"type": "E", "message": "m"}}, "data.traceback is None"),
    ],
)
def test_a_malformed_event_is_refused_naming_what_is_wrong(wire: Any, named: str) -> None:
    with pytest.raises(ValueError, match="Invalid") as raised:
        Event.from_dict(wire)
    assert named in str(raised.value)


def test_a_failure_event_carries_the_type_message_and_the_end_of_the_traceback() -> None:
    message = "\n".join(f"line {i}" for i in range(40))  # a traceback longer than what is kept
    try:
        raise RuntimeError(message)
    except RuntimeError as error:
        event = Event.failure(error)
    assert (event.kind, event.step) == ("error", -1)
    assert event.data["type"] == "RuntimeError"
    assert event.data["message"] == message
    assert event.data["traceback"] == [f"line {i}" for i in range(15, 40)]  # its last 25 lines
    assert Event.from_dict(event.to_dict()) == event


def test_a_run_request_pickles_and_unpickles_without_torch(tmp_path: Path) -> None:
    request = RunRequest(
        {"model": {"family": "gpt2"}},
        run_dir=str(tmp_path),
        resume_newest=True,
        replay_after={"train_loss": 40},
        assets=Assets(data_root=tmp_path / "data"),
        job_id="j1",
        attempt=2,
    )
    assert request.run_dir == tmp_path  # a path, whatever it was given as
    assert pickle.loads(pickle.dumps(request)) == request
    # The warm relay unpickles its request and must not import torch (worker/warm.py).
    probe = "import pickle, sys; pickle.loads(sys.stdin.buffer.read()); print('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe], input=pickle.dumps(request), capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == "False"


def test_resume_newest_settles_on_the_newest_checkpoint_or_none(tmp_path: Path) -> None:
    request = RunRequest({}, run_dir=tmp_path, resume_newest=True)
    assert request.with_resume_point() == RunRequest({}, run_dir=tmp_path)  # a first attempt: none
    (tmp_path / "checkpoints").mkdir()
    for name in ("step_000000010.pt", "step_000000020.pt", "step_000000030.pt.tmp"):
        (tmp_path / "checkpoints" / name).write_bytes(b"")
    settled = request.with_resume_point()
    assert settled.resume_from == tmp_path / "checkpoints" / "step_000000020.pt"
    assert not settled.resume_newest


def test_a_request_that_cannot_say_where_to_resume_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="resume_newest=True needs a run_dir"):
        RunRequest({}, resume_newest=True)
    with pytest.raises(ConfigError, match="both say where to resume"):
        RunRequest({}, run_dir=tmp_path, resume_from=tmp_path / "x.pt", resume_newest=True)


def test_train_takes_where_to_run_from_the_request_alone(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="takes run_dir, data_root from the request"):
        train(RunRequest({}), run_dir=tmp_path, data_root=tmp_path)
