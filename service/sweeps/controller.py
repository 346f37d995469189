"""The sweep controller: Optuna ask/tell over jobs, pruning through cancellation.

It runs inside the scheduler's loop and keeps no state that a restart would lose: every tick it
reads each active sweep's Optuna studies (RDB storage, in the store's own database) and its trial
jobs, then
  - gives a job to any running trial that has none (a controller stopped between ask and submit),
  - tells Optuna how finished jobs ended (idempotently: skip_if_finished),
  - reports new validation losses of running trials as intermediate values (resource = training
    tokens) and, when the pruner says so, tells PRUNED and cancels the job's Ray task,
  - reconciles pruned trials: Optuna's PRUNED is told before the job is cancelled, in another
    transaction (here and in an agent's report, agent_pruning.py), so a kill between the two
    leaves a PRUNED trial whose job is still queued (requeued at restart) or running, or has
    run to its end. Optuna's trial state is the source of truth (a finished trial cannot be told
    again): such a job gets its `pruned_at` and, while it is unfinished, its cancellation; a job
    that finished keeps its status and result, and its `pruned_at` makes the API's trial state
    `pruned`, as Optuna and /history say (never the controller's best: COMPLETE trials only),
  - asks for new trials while fewer than `parallelism` run and the budgets allow (a trial whose
    values make no valid job, a point inside the ranges their bounds could not rule out, is told
    FAIL with the reason and counts as run: the sweep goes on); each ask uses a sampler seeded
    from the sweep's seed and the new trial's number (space.py, sampler_seed), so a restart
    continues the sampler's sequence instead of replaying it,
  - for a proxy sweep (one study per preset and proxy width, substudies.py) with a `confirm`
    stage: once every study has its trials, computes each preset's recommended full-size lr from
    the stored trials (transfer.py) and creates the planned confirmation runs, numbered in a
    `<preset>@full` key of their own (factor-major, then seed), up to `parallelism` at once,
  - finishes the sweep once every study has its `n_trials` finished trials (and the confirmation
    runs have finished).
A job per (sweep, study, trial number) is unique in the store, so no trial ever runs twice, and a
confirmation run (whose recommendation the finished trials fix) is created once, across restarts.

One sweep's trouble stays its own: an error while reading, planning or writing one sweep is
retried on the next ticks and, after `max_attempts` ticks in a row, fails that sweep (its trials
are cancelled); the other sweeps and the scheduler's job launches go on. Database errors are
never held against a sweep: they are retried for as long as they last.

On SQLite only one scheduler can run (its lock file), so whatever owner a sweep names is a
stopped process: the controller takes every active sweep at once, as the scheduler requeues its
jobs at start, instead of waiting `orphan_after_seconds` for the old owner's heartbeat to age.

Each tick reads a snapshot in one short transaction, talks to Optuna with no transaction open
(Optuna writes through its own connections: on SQLite a held write lock would stall it), then
writes the new jobs, cancellations and statuses in a second short transaction.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import optuna
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from service.sweep_spec import ParamRange, SweepSpec
from symopt_core.spec import JobSpec, describe_validation_error

from ..errors import StoreError
from ..settings import Settings
from ..store import JobStatus, Store, SweepStatus
from ..store.jobs import NewEvent, append_events, request_cancel
from ..store.metrics import read_metrics
from ..store.models import Job, Sweep, utcnow
from ..store.sweeps import claim_sweeps, create_trial_job, objective_of, set_sweep_status, trial_jobs
from .space import distribution, make_pruner, make_sampler, token_budget, trial_spec
from .storage import optuna_storage
from .substudies import SubStudy, confirm_key, sub_studies
from .transfer import LrPoint, recommended_lr, transfer_result

__all__ = [
    "ABANDONED_ASK",
    "INVALID_TRIAL",
    "SweepController",
    "TrialJob",
    "finite_val_losses",
    "report_and_maybe_prune",
    "study_names",
]

log = logging.getLogger("symopt.sweeps")
optuna.logging.set_verbosity(optuna.logging.WARNING)

ACTIVE = frozenset({JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELLING})
# A user attribute of a trial whose ask was cut off before all its parameters were set (the
# service was killed mid-ask): it never ran, is told FAIL, and does not count against n_trials.
ABANDONED_ASK = "symopt_abandoned_ask"
# A user attribute holding why a trial's values make no valid job: a point inside the ranges that
# the check of their bounds at submission cannot rule out (n_heads=3 of a d_model=64 model). That
# trial is told FAIL and counts against n_trials (else a sampler could propose it forever).
INVALID_TRIAL = "symopt_invalid_trial"


def study_names(sweep: Sweep, spec: SweepSpec) -> dict[str, str | None]:
    """{Optuna study name: preset}; one study per preset compared (equal budgets), else one; a
    proxy sweep has one per preset and proxy width (substudies.py)."""
    return {name: sub.preset for name, sub in sub_studies(sweep.study_name, spec).items()}


def describe_error(error: BaseException) -> str:
    """`Type: message`, with what to do for a missing package."""
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, ModuleNotFoundError) and error.name:
        text += f" (install it where the scheduler runs: pip install {error.name.split('.')[0]})"
    return text


def _counted(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that n_trials counts: all but asks abandoned halfway (they never ran)."""
    return [t for t in trials if not t.user_attrs.get(ABANDONED_ASK)]


def _fail_marked(
    study: optuna.Study, trial: optuna.trial.Trial | FrozenTrial, mark: str, why: object
) -> None:
    """Tell Optuna the trial failed, marked first with a user attribute saying why: a kill between
    the two writes leaves a marked running trial, which the next tick fails again."""
    optuna.trial.Trial(study, trial._trial_id).set_user_attr(mark, why)
    study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)


def _trial_spec_or_fail(
    study: optuna.Study, trial: optuna.trial.Trial | FrozenTrial, sub: SubStudy
) -> JobSpec | None:
    """The trial's job, or None when its values make an invalid job: then that trial is told FAIL,
    with the reason kept in its INVALID_TRIAL user attribute, and the sweep goes on."""
    try:
        return trial_spec(sub.base, trial.params, sub.preset)
    except ValidationError as error:
        reason = f"{trial.params}: {describe_validation_error(error)}"
        _fail_marked(study, trial, INVALID_TRIAL, reason)
        log.warning("sweep trial %s of %s failed without a job: %s", trial.number, study.study_name, reason)
        return None


def _readable(sweep: Sweep) -> bool:
    try:
        SweepSpec.model_validate(sweep.spec)
    except ValueError:
        return False
    return True


def finite_val_losses(session: Any, job_id: str) -> tuple[tuple[int, float], ...]:
    """(step, value) of a job's stored finite validation losses."""
    page = read_metrics(session=session, job_id=job_id, names=["val_loss"])
    return tuple(
        (s, float(v))
        for series in page.series
        for s, v in zip(series.steps, series.values, strict=True)
        if isinstance(v, float) and math.isfinite(v)
    )


def report_and_maybe_prune(study: optuna.Study, trial: FrozenTrial, job: TrialJob) -> int | None:
    """Report the job's new validation losses to its running trial (resource: training tokens)
    and ask the pruner; the tokens at pruning if it prunes (the trial is then told PRUNED).

    An agent's report asks the same of the same trial from an API thread (service/sweeps/
    agent_pruning.py): whichever finishes the trial first wins, the other finds it finished."""
    live = optuna.trial.Trial(study, trial._trial_id)
    reported = set(trial.intermediate_values)
    try:
        for step, value in job.val_losses:
            tokens = step * job.tokens_per_step
            if step > 0 and tokens not in reported:
                live.report(value, tokens)
                reported.add(tokens)
    except UpdateFinishedTrialError:
        return None
    # An evaluation at the last step leaves nothing to save by stopping: the trial is complete
    # (told as such once its job has succeeded), whatever the pruner would say of it.
    finished_training = any(step >= job.steps for step, _ in job.val_losses)
    if reported and not finished_training and live.should_prune():
        study.tell(trial.number, state=TrialState.PRUNED, skip_if_finished=True)
        log.info("sweep trial %s/%s pruned at %s tokens", study.study_name, trial.number, max(reported))
        return max(reported)
    return None


@dataclass(frozen=True)
class TrialJob:
    """What the controller needs of a trial's job, read once per tick."""

    id: str
    tenant_id: str
    status: JobStatus
    objective: float | None
    tokens_per_step: int
    tokens: int
    steps: int  # the job's whole run: an evaluation at this step is its last
    val_losses: tuple[tuple[int, float], ...]  # (step, value) of finite validation losses
    pruned_at: int | None = None  # tokens at pruning, once the store knows the trial was pruned
    lr: float | None = None  # the job's optimizer.lr (None: its preset's default)

    @property
    def completed(self) -> bool:
        """What Optuna holds COMPLETE: succeeded with an objective, never pruned."""
        return self.status == JobStatus.SUCCEEDED and self.objective is not None and self.pruned_at is None

    @classmethod
    def of(cls, job: Job, spec: SweepSpec, val_losses: tuple[tuple[int, float], ...]) -> TrialJob:
        per_step = int(job.spec["batch"]["size"]) * int(job.spec["data"]["seq_len"])
        return cls(
            job.id,
            job.tenant_id,
            JobStatus(job.status),
            objective_of(job, spec.objective, spec.target_loss),
            per_step,
            job.step * per_step,
            int(job.spec["steps"]),
            val_losses,
            job.pruned_at,
            job.spec["optimizer"].get("lr"),
        )


@dataclass
class Snapshot:
    sweep_id: str
    status: SweepStatus
    name: str
    created_at: Any
    spec: SweepSpec
    studies: dict[str, SubStudy]
    spaces: dict[str, dict[str, ParamRange]]
    jobs: dict[tuple[str | None, int | None], TrialJob]
    tenant_id: str
    prefix: str  # the sweep's Optuna study name, which its studies' names and keys begin with


@dataclass
class Plan:
    """What the Optuna phase decided; written in one transaction."""

    # (study, trial number, job spec, Optuna trial id)
    submit: list[tuple[str, int, JobSpec, int]] = field(default_factory=list)
    created: list[tuple[str, int, str, str]] = field(default_factory=list)  # (study, trial id, job id, name)
    confirm: list[tuple[str, int, JobSpec, str]] = field(default_factory=list)  # (key, number, spec, name)
    cancel: list[TrialJob] = field(default_factory=list)
    pruned: dict[str, int] = field(default_factory=dict)  # job id -> tokens at pruning
    reconciled: set[str] = field(default_factory=set)  # pruned jobs that finished before their cancel
    status: SweepStatus | None = None
    best_job_id: str | None = None
    error: str | None = None
    failure: Exception | None = None  # asking failed: apply the rest, then count the failure


class SweepController:
    """Runs every active sweep one step further per `tick()`, from the scheduler's loop.

    exclusive: this is the only controller on the database (SQLite: the scheduler's lock), so
    sweeps owned by anyone else are taken at once; None: True on SQLite, False otherwise."""

    def __init__(
        self, store: Store, settings: Settings, owner: str, *, exclusive: bool | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.owner = owner
        url = settings.resolved_database_url()
        self.exclusive = make_url(url).get_backend_name() == "sqlite" if exclusive is None else exclusive
        self._storage: optuna.storages.RDBStorage | None = None
        self._studies: dict[str, optuna.Study] = {}
        self._failures: dict[str, int] = {}  # sweep id -> ticks in a row that failed on it

    @property
    def storage(self) -> optuna.storages.RDBStorage:
        # Created on the first tick, in the scheduler process that writes Optuna's tables: Optuna
        # creates its schema on first use (see storage.py).
        if self._storage is None:
            self._storage = optuna_storage(self.settings.resolved_database_url())
        return self._storage

    def tick(self) -> None:
        """Read, plan and write each active sweep; never raises (see the module docstring)."""
        orphan_after = 0.0 if self.exclusive else self.settings.orphan_after_seconds
        stale_before = utcnow() - timedelta(seconds=orphan_after)
        snapshots: list[Snapshot] = []
        broken: list[tuple[str, Exception]] = []
        try:
            with self.store.transaction() as session:
                for sweep in claim_sweeps(session=session, owner=self.owner, stale_before=stale_before):
                    try:
                        snapshots.append(self._snapshot(session, sweep))
                    except SQLAlchemyError:
                        raise  # the session is broken: the whole read is retried next tick
                    except Exception as snapshot_error:  # e.g. a stored spec this version cannot read
                        broken.append((sweep.id, snapshot_error))
        except Exception as read_error:  # StoreError: the database is away; the job launches go on
            log.warning("sweeps: could not read the active sweeps: %s (will retry)", read_error)
            return
        for sweep_id, error in broken:
            self._failed(sweep_id, error)
        for snapshot in snapshots:
            try:
                plan = self._plan(snapshot)
                self._apply(snapshot, plan)
                self._label_trials(plan.created)
                if plan.failure is not None:
                    raise plan.failure
            except Exception as error:
                self._failed(snapshot.sweep_id, error)
            else:
                self._failures.pop(snapshot.sweep_id, None)

    # -- one sweep's failure ------------------------------------------------------------------

    def _failed(self, sweep_id: str, error: Exception) -> None:
        if isinstance(error, SQLAlchemyError | StoreError | StorageInternalError):
            log.warning("sweep %s: database error, will retry: %s", sweep_id, error)
            return
        count = self._failures[sweep_id] = self._failures.get(sweep_id, 0) + 1
        if count < self.settings.max_attempts:
            log.warning(
                "sweep %s: tick failed (%d of %d), will retry: %s",
                sweep_id,
                count,
                self.settings.max_attempts,
                describe_error(error),
                exc_info=error if count == 1 else None,
            )
            return
        message = (
            f"the sweep controller failed {count} times in a row on this sweep; last: {describe_error(error)}"
        )
        log.error("sweep %s failed: %s", sweep_id, message)
        try:
            self._abandon(sweep_id, message)
        except Exception as abandon_error:  # the database again: the next tick tries again
            log.warning("sweep %s: could not mark it failed: %s", sweep_id, abandon_error)
        else:
            self._failures.pop(sweep_id, None)

    def _abandon(self, sweep_id: str, message: str) -> None:
        """Fail the sweep: cancel its unfinished trials' jobs and tell Optuna they failed."""
        with self.store.transaction() as session:
            sweep = session.get(Sweep, sweep_id)
            if sweep is None or SweepStatus(sweep.status).terminal:
                return
            names = list(study_names(sweep, SweepSpec.model_validate(sweep.spec))) if _readable(sweep) else []
            for job in trial_jobs(session=session, sweep_id=sweep.id).values():
                if JobStatus(job.status) in (JobStatus.QUEUED, JobStatus.RUNNING):
                    request_cancel(session=session, tenant_id=job.tenant_id, job_id=job.id)
            status = SweepStatus(sweep.status)
            if status == SweepStatus.QUEUED:
                set_sweep_status(session=session, sweep=sweep, to=SweepStatus.RUNNING)
            target = SweepStatus.CANCELLED if status == SweepStatus.CANCELLING else SweepStatus.FAILED
            set_sweep_status(session=session, sweep=sweep, to=target, error=message)
        for name in names:  # best effort: Optuna may be what failed
            with contextlib.suppress(Exception):
                study = optuna.load_study(study_name=name, storage=self.storage)
                for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        self._studies = {k: v for k, v in self._studies.items() if k not in names}

    # -- read ---------------------------------------------------------------------------------

    def _snapshot(self, session: Any, sweep: Sweep) -> Snapshot:
        spec = SweepSpec.model_validate(sweep.spec)
        jobs = {}
        for key, job in trial_jobs(session=session, sweep_id=sweep.id).items():
            losses = finite_val_losses(session, job.id) if JobStatus(job.status) in ACTIVE else ()
            jobs[key] = TrialJob.of(job, spec, losses)
        names = sub_studies(sweep.study_name, spec)
        resolved = sweep.resolved_space or {}
        spaces = {
            name: {p: ParamRange.model_validate(r) for p, r in resolved[sub.space_key].items()}
            for name, sub in names.items()
        }
        return Snapshot(
            sweep.id,
            SweepStatus(sweep.status),
            sweep.name,
            sweep.created_at,
            spec,
            names,
            spaces,
            jobs,
            sweep.tenant_id,
            sweep.study_name,
        )

    # -- Optuna (no transaction open) --------------------------------------------------------

    def _study(self, name: str, snapshot: Snapshot) -> optuna.Study:
        if name not in self._studies:
            spec = snapshot.spec
            self._studies[name] = optuna.create_study(
                study_name=name,
                storage=self.storage,
                direction="minimize",
                load_if_exists=True,
                sampler=make_sampler(spec, snapshot.spaces[name]),
                pruner=make_pruner(spec, token_budget(snapshot.studies[name].base)),
            )
            # What optuna-dashboard shows beside the study's uuid name: which sweep of whom.
            sub = snapshot.studies[name]
            labels = {
                "sweep_id": snapshot.sweep_id,
                "sweep_name": snapshot.name,
                "tenant_id": snapshot.tenant_id,
                "preset": sub.tuned_preset(),
                **({"proxy": sub.proxy.label} if sub.proxy is not None else {}),
            }
            for key, value in labels.items():
                self._studies[name].set_user_attr(key, value)
        return self._studies[name]

    def _plan(self, snapshot: Snapshot) -> Plan:
        plan, spec = Plan(), snapshot.spec
        if snapshot.status == SweepStatus.CANCELLING:
            return self._plan_cancel(snapshot)
        if snapshot.status == SweepStatus.QUEUED:
            plan.status = SweepStatus.RUNNING
        studies = {name: self._study(name, snapshot) for name in snapshot.studies}
        running = 0
        for name, study in studies.items():
            sub = snapshot.studies[name]
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.PRUNED)):
                job = snapshot.jobs.get((name, trial.number))
                if trial.state == TrialState.PRUNED:
                    if job is not None and job.pruned_at is None:
                        self._reconcile_pruned(study, trial, job, plan)
                elif job is None and set(trial.params) != set(snapshot.spaces[name]):
                    # an ask that failed halfway (its parameters are not all set): never a job
                    _fail_marked(study, trial, ABANDONED_ASK, True)
                elif job is None:  # asked before a restart, never submitted: submit it now
                    job_spec = _trial_spec_or_fail(study, trial, sub)
                    if job_spec is not None:
                        plan.submit.append((name, trial.number, job_spec, trial._trial_id))
                        running += 1
                elif job.status in ACTIVE:
                    pruned_at = report_and_maybe_prune(study, trial, job)
                    if pruned_at is not None:
                        plan.cancel.append(job)
                        plan.pruned[job.id] = pruned_at
                    else:
                        running += 1
                else:
                    self._tell(study, trial.number, job, spec)
        if not self._out_of_budget(snapshot):
            try:
                self._ask(snapshot, studies, plan, running)
            except Exception as error:  # what was decided so far (prunes, asked trials) still holds
                plan.failure = error
                return plan
        if not plan.submit:
            self._maybe_finish(snapshot, studies, plan)
        return plan

    @staticmethod
    def _reconcile_pruned(study: optuna.Study, trial: FrozenTrial, job: TrialJob, plan: Plan) -> None:
        """A trial told PRUNED whose job was never marked so: the process that pruned it stopped
        (or failed to write) before the job's cancellation. Finish what it started."""
        plan.pruned[job.id] = max(trial.intermediate_values, default=job.tokens)
        if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
            plan.cancel.append(job)
        elif job.status.terminal:
            plan.reconciled.add(job.id)
        log.warning(
            "sweep trial %s/%s: PRUNED in Optuna but its job %s is %s; marking the job pruned",
            study.study_name,
            trial.number,
            job.id,
            job.status,
        )

    def _tell(self, study: optuna.Study, number: int, job: TrialJob, spec: SweepSpec) -> None:
        if job.status == JobStatus.SUCCEEDED and job.objective is not None:
            study.tell(number, job.objective, skip_if_finished=True)
        elif job.status == JobStatus.DIVERGED and spec.diverged_value is not None:
            study.tell(number, spec.diverged_value, skip_if_finished=True)
        else:  # failed, cancelled, diverged without a penalty, or no objective (target never reached)
            study.tell(number, state=TrialState.FAIL, skip_if_finished=True)

    def _ask(self, snapshot: Snapshot, studies: dict[str, optuna.Study], plan: Plan, running: int) -> None:
        # Round-robin over the studies (one per compared preset and proxy width), the study with
        # the fewest trials first, so they progress alike at any parallelism (at parallelism 1 a
        # fixed order would run the first study's whole budget before the second's first trial).
        spec, progress = snapshot.spec, True
        while running < spec.parallelism and progress:
            progress = False
            held_now = {name: len(study.get_trials(deepcopy=False)) for name, study in studies.items()}
            for name, study in sorted(studies.items(), key=lambda item: held_now[item[0]]):
                held = study.get_trials(deepcopy=False)
                if running >= spec.parallelism or len(_counted(held)) >= spec.n_trials:
                    continue
                # A sampler of its own for this ask, seeded by the number Optuna gives the trial
                # (trial numbers count every trial of the study): see make_sampler.
                study.sampler = make_sampler(spec, snapshot.spaces[name], trial_number=len(held))
                trial = study.ask({path: distribution(r) for path, r in snapshot.spaces[name].items()})
                progress = True
                job_spec = _trial_spec_or_fail(study, trial, snapshot.studies[name])
                if job_spec is not None:
                    plan.submit.append((name, trial.number, job_spec, trial._trial_id))
                    running += 1

    def _out_of_budget(self, snapshot: Snapshot) -> bool:
        spec = snapshot.spec
        if (
            spec.max_wall_time_s is not None
            and (utcnow() - snapshot.created_at).total_seconds() > spec.max_wall_time_s
        ):
            return True
        return (
            spec.max_tokens is not None and sum(j.tokens for j in snapshot.jobs.values()) >= spec.max_tokens
        )

    def _maybe_finish(self, snapshot: Snapshot, studies: dict[str, optuna.Study], plan: Plan) -> None:
        if any(job.status in ACTIVE for (key, _), job in snapshot.jobs.items() if key in studies):
            return
        trials = {name: _counted(study.get_trials(deepcopy=False)) for name, study in studies.items()}
        finished = sum(1 for found in trials.values() for t in found if t.state.is_finished())
        if finished < snapshot.spec.n_trials * len(studies) and not self._out_of_budget(snapshot):
            return
        if not self._confirmed(snapshot, plan):
            return
        scored = [
            (t.value, snapshot.jobs.get((name, t.number)))
            for name, found in trials.items()
            for t in found
            if t.state == TrialState.COMPLETE
        ]
        best = [(value, job) for value, job in scored if value is not None and job is not None]
        if best:
            plan.status, plan.best_job_id = SweepStatus.SUCCEEDED, min(best, key=lambda item: item[0])[1].id
        else:
            plan.status = SweepStatus.FAILED
            plan.error = "no trial finished with an objective (all failed, diverged or were pruned)"
            invalid = [
                t.user_attrs[INVALID_TRIAL]
                for found in trials.values()
                for t in found
                if INVALID_TRIAL in t.user_attrs
            ]
            if invalid:
                plan.error += f"; {len(invalid)} had values that make an invalid job, e.g. {invalid[0]}"

    def _confirmed(self, snapshot: Snapshot, plan: Plan) -> bool:
        """A proxy sweep's confirmation stage: plan the runs still missing (up to parallelism at
        once); True once every planned run exists and has finished (or none is planned)."""
        spec = snapshot.spec
        confirm = spec.proxy.confirm if spec.proxy is not None else None
        if confirm is None:
            return True
        runs = {
            (key, number): job
            for (key, number), job in snapshot.jobs.items()
            if key is not None and key not in snapshot.studies and number is not None
        }
        active = sum(1 for job in runs.values() if job.status in ACTIVE)
        result = transfer_result(spec, snapshot.studies, completed_points(snapshot), {})
        seeds = confirm.seeds_for(spec.base.seed)
        waiting = False
        for preset in dict.fromkeys(sub.tuned_preset() for sub in snapshot.studies.values()):
            lr = recommended_lr(result, preset)
            if lr is None:
                continue  # no recommendation (too few widths with a result): nothing to confirm
            key = confirm_key(snapshot.prefix, preset)
            for i, factor in enumerate(confirm.factors):
                for j, seed in enumerate(seeds):
                    number = i * len(seeds) + j
                    if (key, number) in runs:
                        continue
                    waiting = True
                    if active >= spec.parallelism:
                        continue
                    compared = preset if spec.presets else None
                    job_spec = trial_spec(spec.base, {"optimizer.lr": lr * factor, "seed": seed}, compared)
                    name = f"{snapshot.name or 'sweep'}/{preset}@full-x{factor:g}-seed{seed}"
                    plan.confirm.append((key, number, job_spec, name))
                    active += 1
        return not waiting and active == 0

    def _plan_cancel(self, snapshot: Snapshot) -> Plan:
        plan = Plan()
        for name in snapshot.studies:
            try:
                study = optuna.load_study(study_name=name, storage=self.storage)
            except KeyError:  # cancelled before its study existed
                continue
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                job = snapshot.jobs.get((name, trial.number))
                if job is not None and job.status.terminal:  # finished before the cancel: keep it
                    self._tell(study, trial.number, job, snapshot.spec)
                else:
                    study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        plan.cancel = [
            job for job in snapshot.jobs.values() if job.status in (JobStatus.QUEUED, JobStatus.RUNNING)
        ]
        if not any(job.status in ACTIVE for job in snapshot.jobs.values()):
            plan.status = SweepStatus.CANCELLED
        return plan

    # -- write --------------------------------------------------------------------------------

    def _label_trials(self, created: list[tuple[str, int, str, str]]) -> None:
        """Each new trial's job id and name as Optuna user attributes (optuna-dashboard shows
        them), once its job is committed."""
        for name, trial_id, job_id, job_name in created:
            study = self._studies.get(name)
            if study is None:
                continue
            try:
                trial = optuna.trial.Trial(study, trial_id)
                trial.set_user_attr("job_id", job_id)
                trial.set_user_attr("job_name", job_name)
            except Exception as error:  # a label only: the trial and its job stand without it
                log.warning("sweeps: could not label trial %s with job %s: %s", trial_id, job_id, error)

    def _apply(self, snapshot: Snapshot, plan: Plan) -> None:
        with self.store.transaction() as session:
            sweep = session.get(Sweep, snapshot.sweep_id)
            if sweep is None or sweep.owner != self.owner:
                return
            for study, number, spec, trial_id in plan.submit:
                trial_job = create_trial_job(
                    session=session,
                    sweep=sweep,
                    study=study,
                    number=number,
                    spec=spec,
                    max_attempts=self.settings.max_attempts,
                )
                plan.created.append((study, trial_id, trial_job.id, trial_job.name))
            for key, number, spec, name in plan.confirm:
                create_trial_job(
                    session=session,
                    sweep=sweep,
                    study=key,
                    number=number,
                    spec=spec,
                    max_attempts=self.settings.max_attempts,
                    name=name,
                )
            for job_id, tokens in plan.pruned.items():
                current = session.get(Job, job_id)
                if current is None or current.pruned_at is not None:
                    continue  # an agent's report marked it meanwhile: keep its tokens
                current.pruned_at = tokens
                if job_id in plan.reconciled:
                    message = (
                        f"the sweep's pruner pruned this trial at {tokens:,} tokens before it finished "
                        f"{current.status} (the service stopped before cancelling it): the trial is pruned"
                    )
                    append_events(
                        session=session, job_id=job_id, events=[NewEvent("log", current.step, message)]
                    )
            for job in plan.cancel:
                current = session.get(Job, job.id)
                if current is not None and JobStatus(current.status) in (JobStatus.QUEUED, JobStatus.RUNNING):
                    request_cancel(session=session, tenant_id=job.tenant_id, job_id=job.id)
            if plan.best_job_id is not None:
                sweep.best_job_id = plan.best_job_id
            if plan.status is not None and plan.status != sweep.status:
                if (
                    SweepStatus(sweep.status) == SweepStatus.CANCELLING
                    and plan.status != SweepStatus.CANCELLED
                ):
                    return  # cancelled meanwhile: the next tick finishes the cancellation
                if SweepStatus(sweep.status) == SweepStatus.QUEUED and plan.status.terminal:
                    # finished in its first tick (every trial it asked was invalid): it ran first
                    set_sweep_status(session=session, sweep=sweep, to=SweepStatus.RUNNING)
                set_sweep_status(session=session, sweep=sweep, to=plan.status, error=plan.error)


def completed_points(snapshot: Snapshot) -> dict[str, list[LrPoint]]:
    """The completed trials of each Optuna study, as (lr, objective) points."""
    points: dict[str, list[LrPoint]] = {}
    for (key, _), job in sorted(snapshot.jobs.items(), key=lambda item: (str(item[0][0]), item[0][1] or 0)):
        if key in snapshot.studies and job.completed and job.lr is not None and job.objective is not None:
            points.setdefault(key, []).append(LrPoint(float(job.lr), job.objective, job.id))
    return points
