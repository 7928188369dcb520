"""Start some or all Cohort services in one process.

`cohort serve all` runs every service here, each on its own port, still talking to each other over
gRPC; `cohort serve <name>` runs one. Tests start suites on port 0. Start-up order: configuration,
tracing, database (migrated to head), identity (the embedded default's admin key for people, and the
service credential the services present to each other), servers, then the channels between them,
once every port is known.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cohort.platform.config import GRPC_SERVICE_NAMES, SERVICE_NAMES, Settings
from cohort.platform.errors import InvalidArgument
from cohort.platform.rpc.client import ChannelPool
from cohort.platform.rpc.server import ServiceRegistration, serve_until_signal, start_server
from cohort.platform.storage import open_database
from cohort.platform.tracing import configure_tracing
from cohort.services.identity.main import start_identity
from cohort.services.jobs.runner import JobRunner
from cohort.services.service_context import ServiceContext

log = logging.getLogger(__name__)

SERVED_WITH: dict[str, tuple[str, ...]] = {"jobs": ("identity",)}
"""Service packages with no server of their own, served by another component's: API keys have always
been on the jobs port (and the gateway routes them there), so clients see no change."""


class Stoppable(Protocol):
    component: str
    port: int

    async def stop(self, grace: float | None = None) -> None: ...


@dataclass
class Suite:
    context: ServiceContext
    servers: dict[str, Stoppable] = field(default_factory=dict)
    startup_seconds: float = 0.0

    @property
    def settings(self) -> Settings:
        return self.context.settings

    def port(self, component: str) -> int:
        return self.servers[component].port

    def address(self, component: str) -> str:
        return self.settings.address_of(component)

    async def stop(self, grace: float | None = None) -> None:
        # The job manager first, while its peers still answer: its running jobs are handed back
        # (queued, to resume from their checkpoint), not failed by calls cut off under them.
        first = [self.servers[name] for name in ("gateway", "jobs") if name in self.servers]
        for server in first:
            await server.stop(grace)
        # Then the channels: a peer's server going away under an open channel is noise, not news.
        await self.context.channels.close()
        for server in reversed(list(self.servers.values())):
            if server not in first:
                await server.stop(grace)
        await self._close_shared()

    async def run_until_signal(self) -> None:
        try:
            await serve_until_signal(list(self.servers.values()), self.settings.shutdown_grace_seconds)
        finally:
            await self._close_shared()

    async def _close_shared(self) -> None:
        await self.context.channels.close()
        await self.context.database.close()


def resolve_components(names: Sequence[str]) -> list[str]:
    """`all` or service names, in start-up order; an unknown name is an error that lists the known ones."""
    if not names or "all" in names:
        return list(SERVICE_NAMES)
    unknown = [n for n in names if n not in SERVICE_NAMES]
    if unknown:
        raise InvalidArgument(
            "service", f"unknown service {unknown[0]!r}; choose from all, {', '.join(SERVICE_NAMES)}"
        )
    return [n for n in SERVICE_NAMES if n in names]


def _registrations(component: str, context: ServiceContext) -> list[ServiceRegistration]:
    """What `component`'s server serves: its own service package's, then those served with it."""
    registrations: list[ServiceRegistration] = []
    for package in (component, *SERVED_WITH.get(component, ())):
        registrations += importlib.import_module(f"cohort.services.{package}.main").registrations(context)
    return registrations


async def start_suite(
    settings: Settings,
    components: Sequence[str],
    *,
    ephemeral_ports: bool = False,
    runs_only_own_jobs: bool = False,
    job_runner: Callable[[ServiceContext], JobRunner] | None = None,
) -> Suite:
    """Start `components` (service names) in this process; with `ephemeral_ports`, each on port 0.
    `runs_only_own_jobs`: the job manager runs only jobs created through it (a CLI command's suite,
    which ends with the command, must not pick up other jobs of the database). `job_runner`: see
    `ServiceContext.job_runner`."""
    started = time.perf_counter()
    components = resolve_components(components)
    configure_tracing(settings, "cohort-" + ("all" if len(components) > 1 else components[0]))
    database = await open_database(settings, migrate=True)
    identity = await start_identity(settings, database)
    settings = identity.settings
    context = ServiceContext(
        settings=settings,
        database=database,
        api_keys=identity.keys,
        authenticator=identity.authenticator,
        runs_only_own_jobs=runs_only_own_jobs,
        job_runner=job_runner,
    )
    suite = Suite(context=context)
    try:
        for name in components:
            if name not in GRPC_SERVICE_NAMES:
                continue
            suite.servers[name] = await start_server(
                settings,
                name,
                _registrations(name, context),
                authenticator=context.authenticator,
                port=0 if ephemeral_ports else None,
            )
        local = {name: f"127.0.0.1:{server.port}" for name, server in suite.servers.items()}
        context.settings = settings.with_overrides(addresses={**settings.addresses, **local})
        context.channels = ChannelPool(context.settings)
        if "gateway" in components:
            from cohort.services.gateway.main import start_gateway

            suite.servers["gateway"] = gateway = await start_gateway(
                context, port=0 if ephemeral_ports else None
            )
            addresses = {**context.settings.addresses, "gateway": f"127.0.0.1:{gateway.port}"}
            context.settings = context.settings.with_overrides(addresses=addresses)
    except BaseException:
        for server in suite.servers.values():
            await server.stop(0)
        if hasattr(context, "channels"):
            await context.channels.close()
        await database.close()
        raise
    suite.startup_seconds = time.perf_counter() - started
    return suite
