"""`cohort train SPEC` and `cohort jobs list|get|watch|pause|resume|cancel|evaluate`.

Clients of the job manager's gRPC API. When no job manager answers at the configured address and
the configuration is the embedded default, `train` and `jobs` start the whole suite in this process
for as long as the command runs (a job left running then continues the next time a suite starts
on the same data directory).

The live display uses `rich`: a progress bar with the figures a person watches (iteration, reward,
success rate, cost, ETA) redrawn in place, and plain lines when the output is not a terminal.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import grpc
import yaml
from google.protobuf import json_format
from google.rpc import code_pb2

from cohort.api.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from cohort.cli import _run, _settings, _table, call_service, service_stub
from cohort.platform.transient import IDEMPOTENT_RETRYABLE_CODES, Backoff, is_retryable_rpc_error

WATCH_SECONDS = 600.0
"""How long one `WatchJob` call of `follow_job` lives before it is re-opened after the last revision."""

TERMINAL_STATES = {
    jobs_pb2.Job.STATE_SUCCEEDED,
    jobs_pb2.Job.STATE_FAILED,
    jobs_pb2.Job.STATE_CANCELLED,
}
STATE_NAMES = {
    name.removeprefix("STATE_").lower(): value
    for name, value in jobs_pb2.Job.State.items()
    if value != jobs_pb2.Job.STATE_UNSPECIFIED
}


class SpecError(click.ClickException):
    """A job spec file that cannot be read or does not match the `Job` message."""


def load_job_spec(path: Path) -> jobs_pb2.Job:
    """A `Job` from a YAML or JSON file holding a `Job` (with `spec`) or a bare `JobSpec`.

    Field names may be snake_case or lowerCamelCase (protobuf JSON); an unknown field is an error
    that names it, so a typo is not silently ignored.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: {exc.strerror or exc}") from exc
    try:
        document = yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml") else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        kind = "YAML" if path.suffix.lower() in (".yaml", ".yml") else "JSON"
        raise SpecError(f"{path}: not valid {kind}: {exc}") from exc
    if not isinstance(document, dict):
        raise SpecError(f"{path}: expected a mapping with the job spec, found {type(document).__name__}")
    if "spec" not in document:
        document = {"spec": document}
    try:
        return json_format.ParseDict(document, jobs_pb2.Job())
    except json_format.ParseError as exc:
        raise SpecError(f"{path}: {exc}") from exc


def jobs_stub(started_here: threading.Event | None = None):
    """A stub of the configured job manager, or of a whole suite started here on the embedded default
    (then `started_here` is set, and the suite runs only the jobs this command creates)."""
    return service_stub("jobs", jobs_pb2_grpc.JobServiceStub, embedded=["all"], started_here=started_here)


def _rpc(action: Callable[[jobs_pb2_grpc.JobServiceStub], Any]) -> Any:
    return call_service("jobs", jobs_pb2_grpc.JobServiceStub, action, embedded=["all"])


def _rpc_noting_suite(action: Callable[[jobs_pb2_grpc.JobServiceStub], Any]) -> tuple[Any, bool]:
    """`_rpc`, and whether the suite answering it was started by this command (so no job manager
    outlives the command)."""
    started_here = threading.Event()

    async def run() -> Any:
        async with jobs_stub(started_here) as stub:
            try:
                return await action(stub)
            except grpc.aio.AioRpcError as exc:
                raise click.ClickException(f"{exc.code().name}: {exc.details()}") from exc

    return _run(run()), started_here.is_set()


def state_name(state: int) -> str:
    return jobs_pb2.Job.State.Name(state).removeprefix("STATE_").lower()


def money(micro_usd: int) -> str:
    return f"${micro_usd / 1e6:,.4f}"


def job_row(job: jobs_pb2.Job) -> tuple[str, ...]:
    progress = job.progress
    return (
        job.job_id,
        state_name(job.state),
        f"{progress.iteration}/{progress.iterations_total or job.spec.iterations}",
        f"{progress.success_rate:.1%}",
        f"{progress.reward_mean:.3f}",
        money(progress.cost_micro_usd),
        job.display_name,
    )


JOB_HEADERS = ("job", "state", "iteration", "success", "reward", "cost", "name")


def reattach_hint(job_id: str) -> str:
    return (
        f"Detached; job {job_id} keeps running. Re-attach with: cohort jobs watch {job_id}"
        f"  (cancel with: cohort jobs cancel {job_id})"
    )


def stopped_with_command_hint(job_id: str) -> str:
    """What a detach means when this command ran the suite: the job cannot outlive the process."""
    return (
        f"Detached. This command was running the suite, so job {job_id} stopped with it: it is queued and "
        "resumes from its latest checkpoint when a job manager runs on this data directory "
        f"('cohort serve all' or 'make run'). Follow it then with: cohort jobs watch {job_id}"
    )


def no_job_manager_hint(job_id: str) -> str:
    return (
        f"No job manager is running on this data directory: job {job_id} waits in the queue until one "
        "starts ('cohort serve all' or 'make run')."
    )


async def follow_job(
    stub: jobs_pb2_grpc.JobServiceStub,
    job_id: str,
    *,
    after_revision: int = 0,
    wait_while_paused: bool = False,
    retry_seconds: float | None = None,
) -> jobs_pb2.Job | None:
    """Streams `WatchJob` into a live display until the job ends or pauses (`wait_while_paused`:
    until it ends, so a job paused and resumed from another shell is followed on); returns the last
    snapshot. A watch cut off by a restarting job manager or a refused keepalive is re-opened after
    the last revision shown, with backoff for `retry_seconds` (default COHORT_RPC_RETRY_SECONDS)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=False)
    last: jobs_pb2.Job | None = None
    printed: tuple[int, int] | None = None
    paused_notice: tuple[int, int] | None = None
    events_shown: set[tuple[int, int, str]] = set()
    columns = (
        TextColumn("[bold]{task.fields[state]}[/bold]"),
        BarColumn(),
        TextColumn("iteration {task.completed:.0f}/{task.total:.0f}"),
        TextColumn("reward {task.fields[reward]}"),
        TextColumn("success {task.fields[success]}"),
        TextColumn("cost {task.fields[cost]}"),
        TextColumn("ETA {task.fields[eta]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("job", total=1, state="queued", reward="-", success="-", cost="$0", eta="-")

        def show(response: jobs_pb2.WatchJobResponse) -> bool:
            """Displays one snapshot; whether the watch is over."""
            nonlocal last, printed, paused_notice
            job = last = response.job
            p = job.progress
            eta = p.eta.ToTimedelta().total_seconds() if p.HasField("eta") else None
            progress.update(
                task,
                total=max(1, p.iterations_total or job.spec.iterations),
                completed=p.iteration,
                state=state_name(job.state),
                reward=f"{p.reward_mean:.3f}" if p.iteration else "-",
                success=f"{p.success_rate:.0%}" if p.iteration else "-",
                cost=money(p.cost_micro_usd),
                eta=f"{eta:.0f}s" if eta is not None and p.iteration else "-",
            )
            line_key = (job.state, p.iteration)
            if not console.is_terminal and not response.heartbeat and line_key != printed:
                printed = line_key
                click.echo(
                    f"{state_name(job.state)} iteration {p.iteration}/{p.iterations_total} "
                    f"reward {p.reward_mean:.3f} success {p.success_rate:.1%} cost {money(p.cost_micro_usd)}"
                )
            for event in p.events:  # learning-health events (a stratum stuck, entropy collapse, ...)
                key = (event.kind, event.iteration, event.stratum)
                if key not in events_shown:
                    events_shown.add(key)
                    click.echo(f"iteration {event.iteration}: {event.message}")
            if job.state in TERMINAL_STATES:
                return True
            if job.state == jobs_pb2.Job.STATE_PAUSED:
                if not wait_while_paused:
                    return True
                if not response.heartbeat and line_key != paused_notice:
                    paused_notice = line_key
                    progress.console.print(
                        f"paused: waiting for 'cohort jobs resume {job_id}' (Ctrl-C detaches)"
                    )
            return False

        budget = _settings().rpc_retry_seconds if retry_seconds is None else retry_seconds
        backoff: Backoff | None = None  # one per run of failures: a watch that ran for hours starts afresh
        while True:
            # Re-opened after the last revision shown, so no snapshot is missed or shown twice.
            resume_after = last.revision if last is not None else after_revision
            request = jobs_pb2.WatchJobRequest(job_id=job_id, after_revision=resume_after)
            try:
                # A watch lives for WATCH_SECONDS and is then re-opened: a channel's calls without a
                # deadline get the default (30 s), and a job may run for hours.
                async for response in stub.WatchJob(request, timeout=WATCH_SECONDS):
                    backoff = None
                    if show(response):
                        return last
                return last
            except grpc.aio.AioRpcError as exc:
                backoff = backoff or Backoff(budget)
                # A watch is a read: safe to repeat, also past its deadline.
                retryable = is_retryable_rpc_error(exc, IDEMPOTENT_RETRYABLE_CODES)
                delay = backoff.next_delay() if retryable else None
                if delay is None:
                    raise
                if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    progress.console.print(
                        f"watch interrupted ({exc.code().name}: {exc.details()}); re-opening"
                    )
            await asyncio.sleep(delay)


def print_outcome(job: jobs_pb2.Job | None) -> None:
    from cohort.services.jobs.evaluation import evaluation_table

    if job is None:
        return
    click.echo(f"\njob {job.job_id}: {state_name(job.state)}")
    if job.progress.failed_attempts and job.state != jobs_pb2.Job.STATE_FAILED:
        error = job.progress.last_attempt_error
        click.echo(
            f"{job.progress.failed_attempts} failed attempt(s) retried; the last: "
            f"{code_pb2.Code.Name(error.code)}: {error.message}"
        )
    if job.state == jobs_pb2.Job.STATE_PAUSED:
        reason = jobs_pb2.PauseReason.Name(job.pause_reason).removeprefix("PAUSE_REASON_").lower()
        click.echo(f"paused ({reason}); continue with: cohort jobs resume {job.job_id}")
    if job.HasField("error") and job.error.code:
        click.echo(f"error: {code_pb2.Code.Name(job.error.code)}: {job.error.message}")
    if job.progress.evaluations:
        latest = job.progress.evaluations[-1]
        click.echo(f"\nEvaluation on held-out queries (iteration {latest.iteration}):")
        click.echo(evaluation_table(latest))


# -- commands ---------------------------------------------------------------------------------------


@click.command()
@click.argument("spec", type=click.Path(path_type=Path))
@click.option("--detach", is_flag=True, help="Submit and return; do not follow the job.")
@click.option("--request-id", default="", help="Idempotency key: resubmitting with it returns the same job.")
def train(spec: Path, detach: bool, request_id: str) -> None:
    """Submit the training job in SPEC (YAML or JSON) and follow its progress.

    Ctrl-C detaches without cancelling the job and prints how to re-attach.
    """
    job = load_job_spec(spec)
    job_id = ""
    started_here = threading.Event()

    async def run() -> jobs_pb2.Job | None:
        nonlocal job_id
        async with jobs_stub(started_here) as stub:
            try:
                created = await stub.CreateJob(jobs_pb2.CreateJobRequest(request_id=request_id, job=job))
                job_id = created.job.job_id
                click.echo(f"job {job_id} created")
                if detach:
                    if started_here.is_set():
                        click.echo(no_job_manager_hint(job_id))
                    click.echo(f"follow it with: cohort jobs watch {job_id}")
                    return None
                # This process runs the job: a pause from another shell is waited out, not an end.
                return await follow_job(stub, job_id, wait_while_paused=started_here.is_set())
            except grpc.aio.AioRpcError as exc:
                raise click.ClickException(f"{exc.code().name}: {exc.details()}") from exc

    try:
        final = _run(run())
    except KeyboardInterrupt:
        if job_id:
            hint = stopped_with_command_hint if started_here.is_set() else reattach_hint
            click.echo("\n" + hint(job_id))
        sys.exit(130)
    print_outcome(final)
    if final is not None and final.state in (jobs_pb2.Job.STATE_FAILED, jobs_pb2.Job.STATE_CANCELLED):
        sys.exit(1)


@click.group()
def jobs() -> None:
    """Training jobs: list, inspect, follow, pause, resume, cancel and evaluate them."""


@jobs.command("list")
@click.option(
    "--state", "states", multiple=True, type=click.Choice(sorted(STATE_NAMES)), help="Only these states."
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def jobs_list(states: tuple[str, ...], limit: int, as_json: bool) -> None:
    """The tenant's jobs, newest first."""

    async def action(stub):
        return await stub.ListJobs(
            jobs_pb2.ListJobsRequest(states=[STATE_NAMES[s] for s in states], page_size=limit)
        )

    response = _rpc(action)
    if as_json:
        for job in response.jobs:
            click.echo(json_format.MessageToJson(job, indent=None))
        return
    click.echo(_table([job_row(job) for job in response.jobs], JOB_HEADERS))


@jobs.command("get")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
def jobs_get(job_id: str, as_json: bool) -> None:
    """One job: state, progress and evaluations."""
    response = _rpc(lambda stub: stub.GetJob(jobs_pb2.GetJobRequest(job_id=job_id)))
    if as_json:
        click.echo(json_format.MessageToJson(response.job, indent=2))
        return
    click.echo(_table([job_row(response.job)], JOB_HEADERS))
    print_outcome(response.job)


@jobs.command("watch")
@click.argument("job_id")
@click.option("--after-revision", default=0, type=click.IntRange(0), help="Resume after this revision.")
def jobs_watch(job_id: str, after_revision: int) -> None:
    """Follow JOB_ID live until it ends (Ctrl-C detaches)."""

    started_here = threading.Event()

    async def run() -> jobs_pb2.Job | None:
        async with jobs_stub(started_here) as stub:
            try:
                if started_here.is_set():  # this command runs no job it did not create
                    current = await stub.GetJob(jobs_pb2.GetJobRequest(job_id=job_id))
                    if current.job.state == jobs_pb2.Job.STATE_QUEUED:
                        click.echo(no_job_manager_hint(job_id))
                return await follow_job(stub, job_id, after_revision=after_revision)
            except grpc.aio.AioRpcError as exc:
                raise click.ClickException(f"{exc.code().name}: {exc.details()}") from exc

    try:
        final = _run(run())
    except KeyboardInterrupt:
        click.echo("\n" + reattach_hint(job_id))
        sys.exit(130)
    print_outcome(final)


def _transition(name: str, request_type, method: str) -> Callable[[str], None]:
    def command(job_id: str) -> None:
        response, started_here = _rpc_noting_suite(
            lambda stub: getattr(stub, method)(request_type(job_id=job_id))
        )
        click.echo(f"job {job_id}: {state_name(response.job.state)}")
        if started_here and response.job.state == jobs_pb2.Job.STATE_QUEUED:
            click.echo(no_job_manager_hint(job_id))

    command.__name__ = f"jobs_{name}"
    return command


jobs.command("pause", help="Pause JOB_ID at its next iteration boundary (after a checkpoint).")(
    click.argument("job_id")(_transition("pause", jobs_pb2.PauseJobRequest, "PauseJob"))
)
jobs.command("resume", help="Resume a paused JOB_ID from its checkpoint.")(
    click.argument("job_id")(_transition("resume", jobs_pb2.ResumeJobRequest, "ResumeJob"))
)
jobs.command("cancel", help="Cancel JOB_ID; in-flight rollouts are cancelled too.")(
    click.argument("job_id")(_transition("cancel", jobs_pb2.CancelJobRequest, "CancelJob"))
)
jobs.command("relaunch", help="Start a FAILED JOB_ID again from its latest checkpoint.")(
    click.argument("job_id")(_transition("relaunch", jobs_pb2.RelaunchJobRequest, "RelaunchJob"))
)


@jobs.command("evaluate")
@click.argument("job_id")
@click.option("--checkpoint", "checkpoint_id", default="", help="Checkpoint to evaluate (default: latest).")
@click.option("--seed", default=0, type=int, help="Seed of the evaluation rollouts (default: the job's).")
@click.option("--json", "as_json", is_flag=True, help="Print the evaluation as JSON.")
def jobs_evaluate(job_id: str, checkpoint_id: str, seed: int, as_json: bool) -> None:
    """Compare a checkpoint of JOB_ID with its starting policy on the held-out queries."""
    from cohort.services.jobs.evaluation import evaluation_table

    async def action(stub):
        request = jobs_pb2.EvaluateJobRequest(job_id=job_id, checkpoint_id=checkpoint_id, seed=seed)
        return await stub.EvaluateJob(request, timeout=3600)

    response = _rpc(action)
    if as_json:
        click.echo(json_format.MessageToJson(response.evaluation, indent=2))
        return
    click.echo(evaluation_table(response.evaluation))
