"""Configuration: read once from `COHORT_*` environment variables into a frozen, validated object.

`Settings.from_env()` is called at start-up; a bad value raises `ConfigError` naming the variable, and
the CLI prints it and exits. Nothing else in Cohort reads the environment.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum, StrEnum
from pathlib import Path

SERVICE_NAMES: tuple[str, ...] = ("collector", "reward", "trainer", "checkpoint", "budget", "jobs", "gateway")
"""Every Cohort service, in start-up order (the gateway is HTTP, the rest gRPC)."""

GRPC_SERVICE_NAMES: tuple[str, ...] = SERVICE_NAMES[:-1]

DEFAULT_PORTS: Mapping[str, int] = {
    "collector": 50051,
    "reward": 50052,
    "trainer": 50053,
    "checkpoint": 50054,
    "budget": 50055,
    "jobs": 50056,
    "gateway": 8080,
}

MiB = 1024 * 1024

_ALLOWLIST_ENTRY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:(\*|[A-Za-z_]\w*(\.[A-Za-z_]\w*)*)")


class ConfigError(ValueError):
    """A configuration value is malformed; `variable` names the environment variable."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


class TlsMode(StrEnum):
    PLAINTEXT = "plaintext"
    TLS = "tls"
    MTLS = "mtls"


class TracingExporter(StrEnum):
    NONE = "none"
    CONSOLE = "console"
    OTLP = "otlp"


@dataclass(frozen=True)
class TlsSettings:
    """Certificates for servers and clients. Paths, not contents, so secrets stay on disk."""

    mode: TlsMode = TlsMode.PLAINTEXT
    cert_file: Path | None = None
    """This process's certificate chain (PEM): served by servers, presented by clients under mTLS."""
    key_file: Path | None = None
    ca_file: Path | None = None
    """CA bundle (PEM): clients verify servers with it; under mTLS servers verify clients with it."""
    server_name_override: str | None = None


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("var")
    database_url: str = ""
    """SQLAlchemy async URL. Empty means the embedded default, SQLite at `<data_dir>/cohort.db`."""
    database_schema: str | None = None
    """PostgreSQL schema for Cohort's tables (several deployments or test runs in one database)."""
    redis_url: str | None = None
    host: str = "127.0.0.1"
    """Interface every server listens on. Only loopback unless set explicitly."""
    ports: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    addresses: Mapping[str, str] = field(default_factory=dict)
    """Where clients reach each service (`host:port`); defaults to `host:port` of this config."""
    max_message_bytes: int = 16 * MiB
    rpc_timeout_seconds: float = 30.0
    rpc_retry_seconds: float = 30.0
    """How long a call between services is retried on UNAVAILABLE (a peer or its database
    restarting), with backoff and jitter; 0 turns retries off."""
    keepalive_seconds: float = 30.0
    """How often a client pings a server while a call is open, to notice a dead peer during a long,
    quiet stream; servers accept pings down to a third of their own value (see
    `cohort.platform.rpc.keepalive`)."""
    shutdown_grace_seconds: float = 5.0
    auth_enabled: bool = True
    api_key: str | None = None
    """The key this process presents when it calls other services (and the CLI uses)."""
    service_key: str | None = None
    """COHORT_SERVICE_KEY: the suite's internal service credential, which the services of a process
    present to each other instead of a person's key (see `cohort.services.identity.bootstrap`)."""
    auth_cache_seconds: float = 5.0
    tls: TlsSettings = field(default_factory=TlsSettings)
    price_table_file: Path | None = None
    """Prices replacing the built-in table: JSON `{"<model>": {"input": <USD per million tokens>, ...}}`."""
    tracing: TracingExporter = TracingExporter.NONE
    otlp_endpoint: str = "http://127.0.0.1:4317"
    log_level: str = "INFO"
    # -- collector
    max_group_size: int = 64
    """Upper bound of `CollectGroupRequest.group_size`."""
    max_concurrent_rollouts: int = 256
    """Rollouts running at once in one collector process, over all requests and jobs."""
    rollout_timeout_seconds: float = 300.0
    """Per-rollout timeout when a request sets none."""
    python_runtime_allowlist: tuple[str, ...] = ()
    """Python agent entry points (`module:function`, or `module:*`) a non-admin key may run."""
    # -- checkpoint
    checkpoint_dir: Path | None = None
    """Where checkpoint files live; default `<data_dir>/checkpoints`."""
    # -- budget
    default_monthly_limit_micro_usd: int = 100_000_000
    """A tenant's monthly spending limit until one is set ($100)."""
    reservation_ttl_seconds: float = 600.0
    """A reservation never committed or released expires after this long."""
    # -- jobs
    job_lease_seconds: float = 15.0
    """A running job's lease; a worker that misses its heartbeats this long loses the job."""
    max_running_jobs: int = 1000
    """Jobs one job-manager process runs at once; more wait in the queue."""
    # -- gateway
    gateway_max_body_bytes: int = 4 * MiB
    """Largest HTTP request body the gateway accepts."""

    @property
    def effective_checkpoint_dir(self) -> Path:
        return self.checkpoint_dir or self.data_dir / "checkpoints"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'cohort.db'}"

    @property
    def is_embedded(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def admin_key_file(self) -> Path:
        return self.data_dir / "admin.key"

    @property
    def service_key_file(self) -> Path:
        return self.data_dir / "service.key"

    def listen_address(self, service: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.ports[service]}"

    def address_of(self, service: str) -> str:
        if service in self.addresses:
            return self.addresses[service]
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{self.ports[service]}"

    def with_overrides(self, **changes) -> Settings:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = _Env(os.environ if environ is None else environ)
        data_dir = Path(env.text("COHORT_DATA_DIR", "var"))
        host = env.text("COHORT_HOST", "127.0.0.1")
        _check_host("COHORT_HOST", host)
        ports = {name: env.port(f"COHORT_{name.upper()}_PORT", DEFAULT_PORTS[name]) for name in SERVICE_NAMES}
        addresses = {
            name: env.address(f"COHORT_{name.upper()}_ADDRESS")
            for name in SERVICE_NAMES
            if env.has(f"COHORT_{name.upper()}_ADDRESS")
        }
        tls = _tls_from_env(env, host)
        return cls(
            data_dir=data_dir,
            database_url=env.database_url("COHORT_DATABASE_URL"),
            database_schema=env.identifier("COHORT_DATABASE_SCHEMA"),
            redis_url=env.redis_url("COHORT_REDIS_URL"),
            host=host,
            ports=ports,
            addresses=addresses,
            max_message_bytes=env.integer(
                "COHORT_MAX_MESSAGE_BYTES", 16 * MiB, minimum=1024, maximum=2**31 - 1
            ),
            rpc_timeout_seconds=env.number("COHORT_RPC_TIMEOUT_SECONDS", 30.0, minimum=0.001),
            rpc_retry_seconds=env.number("COHORT_RPC_RETRY_SECONDS", 30.0, minimum=0.0),
            # gRPC itself sends a client's pings at most once a second.
            keepalive_seconds=env.number("COHORT_GRPC_KEEPALIVE_SECONDS", 30.0, minimum=1.0),
            shutdown_grace_seconds=env.number("COHORT_SHUTDOWN_GRACE_SECONDS", 5.0, minimum=0.0),
            auth_enabled=env.boolean("COHORT_AUTH_ENABLED", True),
            api_key=env.text("COHORT_API_KEY", "") or None,
            service_key=env.text("COHORT_SERVICE_KEY", "") or None,
            auth_cache_seconds=env.number("COHORT_AUTH_CACHE_SECONDS", 5.0, minimum=0.0),
            tls=tls,
            price_table_file=env.path("COHORT_PRICE_TABLE_FILE"),
            tracing=env.choice("COHORT_TRACING", TracingExporter, TracingExporter.NONE),
            otlp_endpoint=env.text("COHORT_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            log_level=env.choice_text(
                "COHORT_LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), "INFO"
            ),
            max_group_size=env.integer("COHORT_MAX_GROUP_SIZE", 64, minimum=1, maximum=4096),
            max_concurrent_rollouts=env.integer(
                "COHORT_MAX_CONCURRENT_ROLLOUTS", 256, minimum=1, maximum=1_000_000
            ),
            rollout_timeout_seconds=env.number("COHORT_ROLLOUT_TIMEOUT_SECONDS", 300.0, minimum=0.001),
            python_runtime_allowlist=env.entry_points("COHORT_PYTHON_RUNTIME_ALLOWLIST"),
            checkpoint_dir=Path(env.text("COHORT_CHECKPOINT_DIR", ""))
            if env.has("COHORT_CHECKPOINT_DIR")
            else None,
            default_monthly_limit_micro_usd=env.integer(
                "COHORT_DEFAULT_MONTHLY_LIMIT_MICRO_USD", 100_000_000, minimum=0, maximum=2**62
            ),
            reservation_ttl_seconds=env.number("COHORT_RESERVATION_TTL_SECONDS", 600.0, minimum=1.0),
            job_lease_seconds=env.number("COHORT_JOB_LEASE_SECONDS", 15.0, minimum=0.5),
            max_running_jobs=env.integer("COHORT_MAX_RUNNING_JOBS", 1000, minimum=1, maximum=1_000_000),
            gateway_max_body_bytes=env.integer(
                "COHORT_GATEWAY_MAX_BODY_BYTES", 4 * MiB, minimum=1024, maximum=2**31 - 1
            ),
        )


def _check_host(variable: str, host: str) -> None:
    if host in ("localhost", "0.0.0.0", "::"):
        return
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        if not host or any(c in host for c in " /:@"):
            raise ConfigError(variable, f"{host!r} is not a host name or IP address") from exc


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tls_from_env(env: _Env, host: str) -> TlsSettings:
    explicit_mode = env.has("COHORT_TLS_MODE")
    mode = env.choice("COHORT_TLS_MODE", TlsMode, TlsMode.PLAINTEXT)
    if not explicit_mode and not _is_loopback(host):
        raise ConfigError(
            "COHORT_TLS_MODE",
            f"COHORT_HOST={host} listens beyond loopback, so choose tls or mtls "
            "(or plaintext, explicitly, behind a trusted proxy)",
        )
    cert = env.path("COHORT_TLS_CERT_FILE")
    key = env.path("COHORT_TLS_KEY_FILE")
    ca = env.path("COHORT_TLS_CA_FILE")
    if mode is not TlsMode.PLAINTEXT:
        if cert is None:
            raise ConfigError("COHORT_TLS_CERT_FILE", f"required when COHORT_TLS_MODE={mode.value}")
        if key is None:
            raise ConfigError("COHORT_TLS_KEY_FILE", f"required when COHORT_TLS_MODE={mode.value}")
        if ca is None:
            raise ConfigError("COHORT_TLS_CA_FILE", f"required when COHORT_TLS_MODE={mode.value}")
    return TlsSettings(
        mode=mode,
        cert_file=cert,
        key_file=key,
        ca_file=ca,
        server_name_override=env.text("COHORT_TLS_SERVER_NAME", "") or None,
    )


class _Env:
    """Typed reads of environment variables; every failure names the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def has(self, name: str) -> bool:
        return self._environ.get(name, "").strip() != ""

    def text(self, name: str, default: str) -> str:
        value = self._environ.get(name, "").strip()
        return value if value else default

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        if not self.has(name):
            return default
        raw = self._environ[name].strip()
        try:
            value = int(raw.replace("_", ""))
        except ValueError as exc:
            raise ConfigError(name, f"{raw!r} is not an integer") from exc
        if not minimum <= value <= maximum:
            raise ConfigError(name, f"{value} is outside {minimum}..{maximum}")
        return value

    def number(self, name: str, default: float, *, minimum: float) -> float:
        if not self.has(name):
            return default
        raw = self._environ[name].strip()
        try:
            value = float(raw)
        except ValueError as exc:
            raise ConfigError(name, f"{raw!r} is not a number") from exc
        if not value >= minimum or value == float("inf"):
            raise ConfigError(name, f"{raw} must be a finite number >= {minimum}")
        return value

    def port(self, name: str, default: int) -> int:
        return self.integer(name, default, minimum=0, maximum=65535)

    def boolean(self, name: str, default: bool) -> bool:
        if not self.has(name):
            return default
        raw = self._environ[name].strip().lower()
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise ConfigError(name, f"{raw!r} is not a boolean (use true or false)")

    def choice(self, name: str, enum: type[Enum], default: Enum):
        if not self.has(name):
            return default
        raw = self._environ[name].strip().lower()
        try:
            return enum(raw)
        except ValueError as exc:
            allowed = ", ".join(m.value for m in enum)
            raise ConfigError(name, f"{raw!r} is not one of: {allowed}") from exc

    def choice_text(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        if not self.has(name):
            return default
        raw = self._environ[name].strip().upper()
        if raw not in allowed:
            raise ConfigError(name, f"{raw!r} is not one of: {', '.join(allowed)}")
        return raw

    def path(self, name: str) -> Path | None:
        if not self.has(name):
            return None
        path = Path(self._environ[name].strip())
        if not path.is_file():
            raise ConfigError(name, f"{path} is not a readable file")
        return path

    def address(self, name: str) -> str:
        raw = self._environ[name].strip()
        host, sep, port = raw.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ConfigError(name, f"{raw!r} is not host:port")
        return raw

    def database_url(self, name: str) -> str:
        if not self.has(name):
            return ""
        raw = self._environ[name].strip()
        scheme = raw.split("://", 1)[0] if "://" in raw else ""
        if scheme in ("postgresql", "postgres", "postgresql+asyncpg"):
            return "postgresql+asyncpg://" + raw.split("://", 1)[1]
        if scheme in ("sqlite", "sqlite+aiosqlite"):
            return "sqlite+aiosqlite://" + raw.split("://", 1)[1]
        raise ConfigError(
            name, f"unsupported database URL scheme {scheme or raw!r} (use postgresql:// or sqlite://)"
        )

    def entry_points(self, name: str) -> tuple[str, ...]:
        if not self.has(name):
            return ()
        entries = tuple(e.strip() for e in self._environ[name].split(",") if e.strip())
        for entry in entries:
            if not _ALLOWLIST_ENTRY.fullmatch(entry):
                raise ConfigError(name, f"{entry!r} is not `package.module:function` or `package.module:*`")
        return entries

    def identifier(self, name: str) -> str | None:
        if not self.has(name):
            return None
        raw = self._environ[name].strip()
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", raw):
            raise ConfigError(name, f"{raw!r} is not a lower-case SQL identifier (a-z, 0-9, _; at most 63)")
        return raw

    def redis_url(self, name: str) -> str | None:
        if not self.has(name):
            return None
        raw = self._environ[name].strip()
        if not raw.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(name, f"{raw!r} is not a redis://, rediss:// or unix:// URL")
        return raw
