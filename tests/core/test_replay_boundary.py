"""A resumed run reports again exactly the points a store lost: per series, after the newest
step the store holds of that series (issue 26 item 4).

The store here keeps what the scheduler's ingest keeps (every value of a metrics event, the
val_loss of an eval) and counts each (series, step) it is given, so "each point exactly once"
means: none lost, none reported twice, over both attempts together."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from symopt_core.training import Event, train
from tests.core.test_training import tiny_spec


class Store:
    """Points keyed by (series, step), as the service's idempotent upsert keeps them."""

    def __init__(self) -> None:
        self.written: Counter[tuple[str, int]] = Counter()

    def take(self, events: list[Event]) -> None:
        for event in events:
            if event.kind == "metrics":
                self.written.update((name, event.step) for name in event.data)
            elif event.kind == "eval":
                self.written[("val_loss", event.step)] += 1

    def newest(self) -> dict[str, int]:
        """{series: newest stored step}: what the scheduler hands a retried attempt."""
        newest: dict[str, int] = {}
        for name, step in self.written:
            newest[name] = max(step, newest.get(name, -1))
        return newest

    def steps(self, name: str) -> list[int]:
        return sorted(step for series, step in self.written if series == name)


def crashed_then_resumed(
    tmp_path: Path,
    data_dir: Path,
    store: Store,
    *,
    steps: int,
    stop_at: int,
    delivered: Callable[[list[tuple[str, int]]], int] = lambda events: 0,
) -> list[tuple[str, int]]:
    """Attempt 1 runs to `stop_at` (its checkpoint there), and only its first `delivered(events)`
    events reach the store (the rest died in flight with the service); attempt 2 resumes from
    the checkpoint with the store's newest step per series, and all its events reach the store.
    Returns (kind, step) of what attempt 2 replayed before it went on (its "resumed" status)."""
    spec = tiny_spec("gpt2", "adamw", steps=steps, checkpoint={"every": 20, "keep": 1}, log_every=10)
    polls = iter(range(1000))
    first: list[Event] = []
    stopped = train(
        spec,
        report=first.append,
        run_dir=tmp_path,
        data_root=data_dir,
        should_stop=lambda: next(polls) >= stop_at,
    )
    assert stopped.steps == stop_at
    store.take(first[: delivered([(e.kind, e.step) for e in first])])
    second: list[Event] = []
    train(
        spec,
        report=second.append,
        run_dir=tmp_path,
        resume_from=stopped.checkpoint,
        data_root=data_dir,
        replay_after=store.newest(),
    )
    store.take(second)
    started = second.index(next(e for e in second if e.kind == "status"))
    return [(e.kind, e.step) for e in second[:started]]


def test_nothing_stored_replays_step_0s_evaluation(tmp_path, data_dir):
    # Case A: the service died before its first flush. "Nothing stored" is not "step 0 stored"
    # (a job's step is 0 for both): the resumed attempt must report val_loss@0 again.
    store = Store()
    replayed = crashed_then_resumed(tmp_path, data_dir, store, steps=40, stop_at=20)
    assert replayed == [("eval", 0), ("metrics", 10), ("metrics", 20), ("eval", 20)]
    assert store.steps("val_loss") == [0, 20, 40]  # every evaluation step
    assert store.steps("train_loss") == [10, 20, 30, 40]
    assert set(store.written.values()) == {1}  # each point once: none lost, none twice


def test_step_0s_evaluation_stored_is_not_replayed(tmp_path, data_dir):
    # Case A, the other side: the first flush stored step 0's evaluation, then the service died.
    store = Store()
    replayed = crashed_then_resumed(
        tmp_path,
        data_dir,
        store,
        steps=40,
        stop_at=20,
        delivered=lambda events: events.index(("eval", 0)) + 1,
    )
    assert replayed == [("metrics", 10), ("metrics", 20), ("eval", 20)]
    assert store.steps("val_loss") == [0, 20, 40]
    assert set(store.written.values()) == {1}


def test_a_val_loss_in_flight_after_its_steps_train_loss_is_replayed(tmp_path, data_dir):
    # Case B: train_loss@40 was stored, then the service died with val_loss@40 in flight (a step's
    # evaluation reports after its metrics). One boundary for every series (40) would lose it.
    store = Store()
    replayed = crashed_then_resumed(
        tmp_path,
        data_dir,
        store,
        steps=60,
        stop_at=40,
        delivered=lambda events: events.index(("metrics", 40)) + 1,
    )
    assert replayed == [("eval", 40)]
    assert store.steps("val_loss") == [0, 20, 40, 60]  # every evaluation step
    assert store.steps("train_loss") == [10, 20, 30, 40, 50, 60]
    assert set(store.written.values()) == {1}
