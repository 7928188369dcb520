"""The `cohort` command. Built on click: nested commands, `--help` everywhere, typed options.

cohort serve all | <service>...   run services in this process (Ctrl-C or SIGTERM stops them)
cohort demo                       the main job on the embedded default
cohort health                     gRPC health of a running suite
cohort keys create|list|revoke|recover-admin|create-service   API keys, straight in the database
cohort train SPEC                 submit a training job and follow it live
cohort jobs list|get|watch|...    training jobs
cohort trajectories ...           stored trajectories: list, show, search, export, import, recover
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from cohort.cli import quiet_grpc  # noqa: F401 - before anything loads gRPC
from cohort.platform.config import GRPC_SERVICE_NAMES, SERVICE_NAMES, ConfigError, Settings
from cohort.platform.errors import CohortError
from cohort.platform.event_loop import run_event_loop

StubT = TypeVar("StubT")


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from exc


def _client_settings() -> Settings:
    """Settings for calling a running suite: the key is COHORT_API_KEY, else the embedded admin key."""
    settings = _settings()
    if settings.api_key is None and settings.admin_key_file.is_file():
        settings = settings.with_overrides(api_key=settings.admin_key_file.read_text().strip() or None)
    return settings


def _run(coroutine: Awaitable[Any]) -> Any:
    try:
        return run_event_loop(coroutine)
    except CohortError as exc:
        raise click.ClickException(exc.message) from exc


def _table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@asynccontextmanager
async def service_stub(
    component: str,
    stub_class: Callable[[Any], StubT],
    *,
    embedded: Sequence[str],
    started_here: threading.Event | None = None,
) -> AsyncIterator[StubT]:
    """A stub of the configured `component`; when none answers on the embedded default, of one
    started in this process together with the `embedded` services, for as long as the command runs
    (`started_here` is then set)."""
    from cohort.platform.rpc.client import ChannelPool
    from cohort.platform.rpc.probe import grpc_health

    settings = _client_settings()
    async with ChannelPool(settings) as pool:
        channel = pool.channel(component)
        if await grpc_health(channel) == "SERVING":
            yield stub_class(channel)
            return
    if not settings.is_embedded:
        raise click.ClickException(
            f"no {component} service answers at {settings.address_of(component)}; "
            f"start one with 'cohort serve {component}'"
        )
    from cohort.services.suite import start_suite

    if "all" in embedded:
        click.echo("(no suite running: starting one in this process on the embedded default)", err=True)
    # The command's suite ends with it: its job manager runs only jobs this command creates.
    suite = await start_suite(_settings(), embedded, ephemeral_ports=True, runs_only_own_jobs=True)
    if started_here is not None:
        started_here.set()
    try:
        # The command acts with the operator's key (read once the suite made it), never with the
        # suite's service credential, so it sees what that key may see.
        client = _client_settings().with_overrides(addresses=suite.context.settings.addresses)
        async with ChannelPool(client) as pool:
            yield stub_class(pool.channel(component))
    finally:
        await suite.stop(0)


def call_service(
    component: str,
    stub_class: Callable[[Any], StubT],
    action: Callable[[StubT], Awaitable[Any]],
    *,
    embedded: Sequence[str],
) -> Any:
    """Runs `action(stub)` against `service_stub(...)`; a failed call is a clear CLI error."""
    import grpc

    async def run() -> Any:
        async with service_stub(component, stub_class, embedded=embedded) as stub:
            try:
                return await action(stub)
            except grpc.aio.AioRpcError as exc:
                raise click.ClickException(f"{exc.code().name}: {exc.details()}") from exc

    return _run(run())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cohort")
def main() -> None:
    """Cohort: improve tool-using agents from their own trajectories with GRPO.

    Configuration comes from COHORT_* environment variables (see README.md); with none set, Cohort
    runs on the embedded default: SQLite under ./var, every service on 127.0.0.1.
    """


@main.command()
@click.argument("services", nargs=-1, type=click.Choice(["all", *SERVICE_NAMES]))
def serve(services: tuple[str, ...]) -> None:
    """Run SERVICES (default: all) in this process until Ctrl-C or SIGTERM.

    Each service listens on its own port (COHORT_<NAME>_PORT) and reaches the others over gRPC
    (COHORT_<NAME>_ADDRESS for services that run elsewhere).
    """
    settings = _settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.log_level != "DEBUG":
        logging.getLogger("alembic").setLevel(logging.WARNING)
    _run(_serve(settings, services or ("all",)))


def tune_garbage_collector() -> None:
    """Process-wide, once the servers are up. What start-up built (modules, descriptors, routes) lives
    as long as the process: frozen out of the collector's sight, a full collection no longer walks it
    (under load those collections, set off by the short-lived objects of every request, took an
    eighth of the gateway's CPU). A larger young generation (50,000 allocations, not 700) then runs
    the collector far less often for the same garbage: about 10% more requests per CPU-second in the
    gateway bench."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def _serve(settings: Settings, services: Sequence[str]) -> None:
    from cohort.services.suite import start_suite

    suite = await start_suite(settings, services)
    tune_garbage_collector()
    # Signal handlers first, so a Ctrl-C right after the banner already stops gracefully.
    serving = asyncio.create_task(suite.run_until_signal())
    await asyncio.sleep(0)
    rows = [
        (name, f"{settings.host}:{server.port}", "gRPC" if name != "gateway" else "HTTP")
        for name, server in suite.servers.items()
    ]
    click.echo(_table(rows, ("service", "listening on", "protocol")))
    click.echo(
        f"started {len(suite.servers)} service(s) in {suite.startup_seconds:.2f} s; "
        f"database {suite.context.database.engine.url.render_as_string(hide_password=True)}"
    )
    if settings.is_embedded and settings.auth_enabled:
        click.echo(f"admin API key: {settings.admin_key_file} (send it as 'authorization: Bearer <key>')")
    click.echo("Ctrl-C or SIGTERM stops the suite gracefully.")
    await serving


@main.command()
def demo() -> None:
    """The main job: the suite on the embedded default trains an agent on toolbench, live."""
    settings = _settings()
    logging.basicConfig(level="WARNING")
    ok = _run(_demo(settings))
    sys.exit(0 if ok else 1)


DEMO_SPEC = Path(__file__).parent / "specs" / "toolbench-demo.yaml"


async def _demo(settings: Settings) -> bool:
    from cohort.api.jobs.v1 import jobs_pb2, jobs_pb2_grpc
    from cohort.cli.jobs import follow_job, load_job_spec, print_outcome
    from cohort.services.suite import start_suite

    click.echo("Starting the Cohort suite (embedded default: SQLite, in-process, gRPC between services)...")
    suite = await start_suite(settings, ["all"], ephemeral_ports=True, runs_only_own_jobs=True)
    try:
        click.echo(f"{len(suite.servers)} services started in {suite.startup_seconds:.2f} s\n")
        report = await health_report(suite.context.settings, list(suite.servers))
        click.echo(_table(report, ("service", "address", "health", "gRPC services (reflection)")))
        if not all(row[2] == "SERVING" for row in report):
            return False
        job = load_job_spec(DEMO_SPEC)
        click.echo(f"\nTraining on toolbench ({DEMO_SPEC.name}): a uniform policy learns which tools to use.")
        stub = jobs_pb2_grpc.JobServiceStub(suite.context.channels.channel("jobs"))
        created = await stub.CreateJob(jobs_pb2.CreateJobRequest(job=job))
        final = await follow_job(stub, created.job.job_id)
        print_outcome(final)
        database = suite.context.database.engine.url.render_as_string(hide_password=True)
        click.echo(f"\ntrajectories: {database}  (cohort trajectories list --job {created.job.job_id})")
        click.echo(f"checkpoints:  {suite.settings.effective_checkpoint_dir.resolve()}")
        if settings.auth_enabled:
            click.echo(f"admin API key: {settings.admin_key_file}")
        return final is not None and final.state == jobs_pb2.Job.STATE_SUCCEEDED
    finally:
        await suite.stop(0)


async def health_report(settings: Settings, services: Sequence[str]) -> list[tuple[str, str, str, str]]:
    """One row per service: address, health, and the services it lists by reflection."""
    from cohort.platform.rpc.client import ChannelPool
    from cohort.platform.rpc.probe import grpc_health, http_health, reflected_services

    pool = ChannelPool(settings)
    rows = []
    try:
        for name in services:
            address = settings.address_of(name)
            if name in GRPC_SERVICE_NAMES:
                channel = pool.channel(name)
                health = await grpc_health(channel)
                listed = await reflected_services(channel) if health == "SERVING" else []
                cohort_services = [s.rsplit(".", 1)[-1] for s in listed if s.startswith("cohort.")]
                rows.append((name, address, health, ", ".join(cohort_services)))
            else:
                rows.append((name, address, await http_health(address), "HTTP: /healthz"))
    finally:
        await pool.close()
    return rows


@main.command()
@click.argument("services", nargs=-1, type=click.Choice(["all", *SERVICE_NAMES]))
def health(services: tuple[str, ...]) -> None:
    """Report the health of running SERVICES (default: all) at their configured addresses."""
    settings = _client_settings()
    names = list(SERVICE_NAMES) if not services or "all" in services else list(services)
    rows = _run(health_report(settings, names))
    click.echo(_table(rows, ("service", "address", "health", "gRPC services (reflection)")))
    sys.exit(0 if all(row[2] == "SERVING" for row in rows) else 1)


@main.group()
def keys() -> None:
    """API keys: each maps to a tenant; calls authenticate with 'authorization: Bearer <key>'.

    These commands work on the configured database directly, as its operator.
    """


def _with_store(action: Callable[..., Awaitable[Any]]) -> Any:
    # The key log lines (who created or revoked which key) are the audit trail: on stderr here too.
    audit = logging.getLogger("cohort.identity")
    if not audit.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        audit.addHandler(handler)
        audit.setLevel(logging.INFO)

    async def run() -> Any:
        from cohort.platform.storage import open_database
        from cohort.services.identity.service import ApiKeyService

        database = await open_database(_settings(), migrate=True)
        try:
            return await action(ApiKeyService(database.sessions))
        finally:
            await database.close()

    return _run(run())


def _key_row(record) -> dict[str, Any]:
    return {
        "key_id": record.id,
        "tenant_id": record.tenant_id,
        "name": record.name,
        "admin": record.is_admin,
        "created_at": record.created_at.isoformat(),
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
    }


@keys.command("create")
@click.option("--tenant", required=True, help="Tenant the key acts for (created when new).")
@click.option("--name", required=True, help="A name for people, e.g. 'ci pipeline'.")
@click.option("--admin", is_flag=True, help="May manage every tenant's keys and act for any tenant.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keys_create(tenant: str, name: str, admin: bool, as_json: bool) -> None:
    """Create a key; its secret is printed once and stored only hashed."""
    record, secret = _with_store(
        lambda store: store.create_key(_operator(), name, tenant_id=tenant, is_admin=admin)
    )
    if as_json:
        click.echo(json.dumps({**_key_row(record), "secret": secret}))
    else:
        click.echo(f"created {record.id} for tenant {record.tenant_id}{' (admin)' if admin else ''}")
        click.echo(f"secret (shown only now): {secret}")


@keys.command("list")
@click.option("--tenant", default="default", show_default=True, help="Whose keys.")
@click.option("--include-revoked", is_flag=True, help="Also list revoked keys.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def keys_list(tenant: str, include_revoked: bool, as_json: bool) -> None:
    """List a tenant's keys (never their secrets)."""
    from cohort.platform.identity import SYSTEM_IDENTITY

    async def collect(store) -> list:
        records, token = [], ""
        while True:
            page, token = await store.list_keys(
                SYSTEM_IDENTITY,
                tenant_id=tenant,
                include_revoked=include_revoked,
                page_size=500,
                page_token=token,
            )
            records.extend(page)
            if not token:
                return records

    records = _with_store(collect)
    if as_json:
        for record in records:
            click.echo(json.dumps(_key_row(record)))
        return
    rows = [
        (
            r.id,
            r.name,
            "yes" if r.is_admin else "",
            r.created_at.strftime("%Y-%m-%d %H:%M"),
            r.revoked_at.strftime("%Y-%m-%d %H:%M") if r.revoked_at else "",
        )
        for r in records
    ]
    click.echo(_table(rows, ("key id", "name", "admin", "created (UTC)", "revoked (UTC)")))


@keys.command("revoke")
@click.argument("key_id")
@click.option(
    "--service-credential",
    is_flag=True,
    help="Allow revoking the suite's service credential (to rotate it; restart the services after).",
)
def keys_revoke(key_id: str, service_credential: bool) -> None:
    """Revoke KEY_ID; calls with it fail from then on (other processes: within COHORT_AUTH_CACHE_SECONDS).

    The last active admin key cannot be revoked: create another one first.
    """
    record = _with_store(
        lambda store: store.revoke_key(_operator(), key_id, allow_service_key=service_credential)
    )
    click.echo(f"revoked {record.id} (tenant {record.tenant_id}) at {record.revoked_at.isoformat()}")


@keys.command("create-service")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keys_create_service(as_json: bool) -> None:
    """Create a service credential: set COHORT_SERVICE_KEY to it in every service process.

    The services present it to each other instead of a person's key; the API cannot revoke it.
    The embedded default needs none: it makes its own at first start (<data dir>/service.key).
    """
    from cohort.services.identity.service import SERVICE_KEY_NAME

    record, secret = _with_store(lambda store: store.create_key(_operator(), SERVICE_KEY_NAME, service=True))
    if as_json:
        click.echo(json.dumps({**_key_row(record), "secret": secret}))
    else:
        click.echo(f"created service credential {record.id}")
        click.echo(f"secret (shown only now; set COHORT_SERVICE_KEY to it): {secret}")


@keys.command("recover-admin")
@click.option("--tenant", default="default", show_default=True, help="Tenant of the new admin key.")
@click.option("--name", default="admin (recovered)", show_default=True, help="A name for people.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keys_recover_admin(tenant: str, name: str, as_json: bool) -> None:
    """Mint a new admin key straight on the database, with the services up or down.

    For when no usable admin key is left. On the embedded default the new key also replaces
    <data dir>/admin.key, which the CLI presents.
    """
    from cohort.services.identity.bootstrap import write_secret_file

    settings = _settings()
    record, secret = _with_store(
        lambda store: store.create_key(_operator(), name, tenant_id=tenant, is_admin=True)
    )
    written = settings.is_embedded and settings.api_key is None
    if written:
        write_secret_file(settings.admin_key_file, secret)
    if as_json:
        click.echo(json.dumps({**_key_row(record), "secret": secret}))
        return
    click.echo(f"created admin key {record.id} for tenant {record.tenant_id}")
    if written:
        click.echo(f"written to {settings.admin_key_file} (mode 0600)")
    click.echo(f"secret (shown only now): {secret}")


def _operator():
    """The actor of key commands: the operator at this machine, named in the key log lines."""
    import getpass

    from cohort.platform.context import DEFAULT_TENANT_ID, Identity

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown user"
    return Identity(tenant_id=DEFAULT_TENANT_ID, key_id=f"cohort CLI ({user})", is_admin=True)


def _register_command_groups() -> None:
    # Imported here: each group module imports the helpers above.
    from cohort.cli.jobs import jobs, train
    from cohort.cli.trajectories import trajectories

    main.add_command(trajectories)
    main.add_command(train)
    main.add_command(jobs)


_register_command_groups()
