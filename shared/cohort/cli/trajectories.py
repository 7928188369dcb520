"""`cohort trajectories`: list, show, search, export, import and recover trajectories.

Every command except `recover` is a client of the collector's gRPC API. When no collector answers
at the configured address and the configuration is the embedded default, the command starts a
collector in this process for its own use, so the commands work with no server running.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Iterable
from datetime import UTC
from pathlib import Path
from typing import Any

import click
from google.protobuf import json_format

from cohort.api.collector.v1 import collector_pb2, collector_pb2_grpc
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.cli import _table, call_service, service_stub

EXPORT_FORMATS = {
    "cohort-jsonl": collector_pb2.EXPORT_FORMAT_COHORT_JSONL,
    "trae-json": collector_pb2.EXPORT_FORMAT_TRAE_JSON,
    "openai-chat-jsonl": collector_pb2.EXPORT_FORMAT_OPENAI_CHAT_JSONL,
}
TERMINATION_REASONS = {
    name.removeprefix("TERMINATION_REASON_").lower(): value
    for name, value in trajectory_pb2.TerminationReason.items()
    if value != trajectory_pb2.TERMINATION_REASON_UNSPECIFIED
}
IMPORT_BATCH = 256


def collector_stub():
    """A stub of the configured collector, or of one started here on the embedded default."""
    return service_stub("collector", collector_pb2_grpc.CollectorServiceStub, embedded=["collector"])


def _rpc(action: Callable[[collector_pb2_grpc.CollectorServiceStub], Any]) -> Any:
    return call_service("collector", collector_pb2_grpc.CollectorServiceStub, action, embedded=["collector"])


def filter_options(command: Callable) -> Callable:
    """The trajectory filters shared by list, search and export."""
    options = [
        click.option("--agent", help="Agent name."),
        click.option("--agent-version", help="Agent version."),
        click.option("--job", help="Job id."),
        click.option("--group", help="Group id."),
        click.option("--iteration", type=int, help="Job iteration."),
        click.option(
            "--success/--failure", "success", default=None, help="Only successes, or only failures."
        ),
        click.option(
            "--termination", multiple=True, type=click.Choice(sorted(TERMINATION_REASONS)), help="Repeatable."
        ),
        click.option("--min-reward", type=float, help="Minimum reward, inclusive."),
        click.option("--max-reward", type=float, help="Maximum reward, inclusive."),
        click.option("--since", type=click.DateTime(), help="Stored at or after (UTC)."),
        click.option("--until", type=click.DateTime(), help="Stored before (UTC)."),
        click.option("--label", "labels", multiple=True, help="KEY=VALUE; repeatable, all must match."),
        click.option("--include-superseded", is_flag=True, help="Include abandoned job attempts."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def build_filter(options: dict[str, Any]) -> collector_pb2.TrajectoryFilter:
    selected = collector_pb2.TrajectoryFilter(
        agent_name=options.get("agent") or "",
        agent_version=options.get("agent_version") or "",
        job_id=options.get("job") or "",
        group_id=options.get("group") or "",
        include_superseded=bool(options.get("include_superseded")),
        termination_reasons=[TERMINATION_REASONS[t] for t in options.get("termination") or ()],
    )
    if options.get("iteration") is not None:
        selected.iteration = options["iteration"]
    if options.get("success") is not None:
        selected.success = options["success"]
    if options.get("min_reward") is not None:
        selected.min_reward = options["min_reward"]
    if options.get("max_reward") is not None:
        selected.max_reward = options["max_reward"]
    for key, bound in (("since", selected.start_time), ("until", selected.end_time)):
        if options.get(key) is not None:
            bound.FromDatetime(options[key].replace(tzinfo=UTC))
    for label in options.get("labels") or ():
        key, sep, value = label.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{label!r} is not KEY=VALUE", param_hint="--label")
        selected.labels[key] = value
    return selected


def _summary_rows(hits: Iterable[collector_pb2.SearchHit], scored: bool) -> list[tuple]:
    rows = []
    for hit in hits:
        t = hit.trajectory
        outcome = "" if not t.HasField("success") else ("success" if t.success else "failure")
        reason = trajectory_pb2.TerminationReason.Name(t.termination_reason).removeprefix(
            "TERMINATION_REASON_"
        )
        reward = f"{t.reward:.3f}" if t.HasField("reward") else ""
        created = (
            t.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S") if t.HasField("create_time") else ""
        )
        task = t.task.replace("\n", " ")
        row = (t.trajectory_id, created, t.agent.name, outcome, reason.lower(), reward, task[:60])
        rows.append(((f"{hit.score:.3f}",) if scored else ()) + row)
    return rows


def _print_hits(response: collector_pb2.SearchTrajectoriesResponse, as_json: bool, scored: bool) -> None:
    if as_json:
        for hit in response.hits:
            click.echo(json_format.MessageToJson(hit, indent=None))
        return
    headers = ("id", "created (UTC)", "agent", "outcome", "termination", "reward", "task")
    click.echo(_table(_summary_rows(response.hits, scored), (("score",) if scored else ()) + headers))
    if response.next_page_token:
        click.echo(f"more: --page-token {response.next_page_token}")


@click.group()
def trajectories() -> None:
    """Recorded trajectories: every LLM call, step, tool call and decision of an agent run."""


@trajectories.command("list")
@filter_options
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000), help="Rows per page.")
@click.option("--page-token", default="", help="Continue a previous listing.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_command(limit: int, page_token: str, as_json: bool, **options: Any) -> None:
    """List trajectories, newest first."""
    request = collector_pb2.SearchTrajectoriesRequest(
        filter=build_filter(options), page_size=limit, page_token=page_token
    )
    response = _rpc(lambda stub: stub.SearchTrajectories(request))
    _print_hits(response, as_json, scored=False)


@trajectories.command()
@click.argument("query")
@filter_options
@click.option("--similar", is_flag=True, help="Rank by similarity to QUERY instead of full-text match.")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def search(query: str, similar: bool, limit: int, as_json: bool, **options: Any) -> None:
    """Full-text search (or --similar: similarity search) over task, messages and results."""
    request = collector_pb2.SearchTrajectoriesRequest(filter=build_filter(options), page_size=limit)
    if similar:
        request.similar_to_text = query
    else:
        request.text_query = query
    response = _rpc(lambda stub: stub.SearchTrajectories(request))
    _print_hits(response, as_json, scored=True)


@trajectories.command()
@click.argument("trajectory_id")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["trae", "cohort"]),
    default="trae",
    show_default=True,
    help="Trae Agent JSON, or Cohort's canonical JSON.",
)
def show(trajectory_id: str, output_format: str) -> None:
    """Print one trajectory."""
    reply = _rpc(
        lambda stub: stub.GetTrajectory(collector_pb2.GetTrajectoryRequest(trajectory_id=trajectory_id))
    )
    if output_format == "cohort":
        click.echo(json_format.MessageToJson(reply.trajectory, indent=2))
        return
    from cohort.sdk.trajectories.trae import dumps_trae, trajectory_to_trae

    click.echo(dumps_trae(trajectory_to_trae(reply.trajectory)))


@trajectories.command()
@filter_options
@click.option("--format", "export_format", type=click.Choice(sorted(EXPORT_FORMATS)), required=True)
@click.option(
    "--output",
    "-o",
    default="-",
    show_default=True,
    help="File, or '-' for standard output; trae-json into an existing directory: one file each.",
)
@click.option("--limit", default=0, type=click.IntRange(0), help="Stop after N trajectories (0: all).")
def export(export_format: str, output: str, limit: int, **options: Any) -> None:
    """Export trajectories: Cohort JSONL, Trae JSON, or OpenAI chat fine-tuning JSONL."""
    request = collector_pb2.ExportTrajectoriesRequest(
        filter=build_filter(options), format=EXPORT_FORMATS[export_format], limit=limit
    )
    target = Path(output) if output != "-" else None
    per_file = export_format == "trae-json" and target is not None and target.is_dir()
    array = export_format == "trae-json" and not per_file

    # A file is written under a temporary name and renamed only when the export completed, so a
    # failed export never leaves a half-written file where a complete one is expected.
    partial = None if target is None or per_file else target.with_name(target.name + ".partial")
    try:
        sink = sys.stdout if partial is None else partial.open("w", encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write {target}: {exc.strerror}") from exc

    async def stream(stub) -> int:
        count = 0
        if array:
            sink.write("[")
        async for record in stub.ExportTrajectories(request):
            if per_file:
                document = json.loads(record.record)
                (target / f"{record.trajectory_id}.json").write_text(
                    json.dumps(document, indent=2, ensure_ascii=False), encoding="utf-8"
                )
            elif array:
                sink.write(("," if count else "") + "\n" + record.record)
            else:
                sink.write(record.record + "\n")
            count += 1
        if array:
            sink.write("\n]\n")
        return count

    try:
        count = _rpc(stream)
    except BaseException:
        if partial is not None:
            sink.close()
            partial.unlink(missing_ok=True)
        raise
    if partial is not None:
        sink.close()
        partial.replace(target)
    click.echo(f"exported {count} trajectories", err=True)


def _trae_files(paths: Iterable[str]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*.json") if p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            raise click.BadParameter(f"{raw} does not exist", param_hint="PATHS")
    return files


def content_id(trajectory: trajectory_pb2.Trajectory) -> str:
    """An id derived from the content, so importing the same file twice stores it once."""
    digest = hashlib.sha256(trajectory.SerializeToString(deterministic=True)).hexdigest()
    return f"trae-{digest[:32]}"


@trajectories.command("import")
@click.argument("paths", nargs=-1, required=True)
def import_command(paths: tuple[str, ...]) -> None:
    """Import Trae Agent trajectory files (files, or directories searched for *.json).

    A file recorded by Cohort's recorder keeps what its "cohort" block holds (trajectory id, agent,
    job fields, labels, decisions, outcome), as if the recorder had sent it to the collector. A file
    without ids gets content-derived ids, so importing it again stores nothing new.
    """
    from cohort.platform.errors import CohortError
    from cohort.sdk.trajectories.trae import load_trae_file

    loaded: list[tuple[Path, trajectory_pb2.Trajectory]] = []
    unreadable = 0
    for path in _trae_files(paths):
        try:
            loaded.extend((path, t) for t in load_trae_file(path))
        except CohortError as exc:
            unreadable += 1
            click.echo(f"skipped {path}: {exc.message}", err=True)

    for _, trajectory in loaded:
        if not trajectory.trajectory_id:
            trajectory.trajectory_id = content_id(trajectory)

    async def ingest(stub) -> collector_pb2.IngestTrajectoriesResponse:
        async def requests():
            for _, trajectory in loaded:
                yield collector_pb2.IngestTrajectoriesRequest(trajectory=trajectory)

        return await stub.IngestTrajectories(requests())

    reply = _rpc(ingest) if loaded else collector_pb2.IngestTrajectoriesResponse()
    for failure in reply.failures:
        click.echo(f"failed {loaded[failure.index][0]}: {failure.status.message}", err=True)
    click.echo(
        f"imported {reply.stored_count}, already stored {reply.duplicate_count}, "
        f"failed {len(reply.failures) + unreadable}"
    )
    if reply.failures or unreadable:
        sys.exit(1)


@trajectories.command()
@click.argument("paths", nargs=-1, required=True)
def recover(paths: tuple[str, ...]) -> None:
    """Turn journals left by a crashed recording into valid (partial) Trae trajectory files.

    PATHS are journal files (*.journal) or directories searched for them.
    """
    from cohort.sdk import recover_path

    recovered = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise click.BadParameter(f"{raw} does not exist", param_hint="PATHS")
        recovered.extend(recover_path(path))
    for path in recovered:
        click.echo(f"recovered {path}")
    if not recovered:
        click.echo("no journals to recover")
