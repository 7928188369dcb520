"""The server platform every Cohort service runs on: nothing here knows a service's domain.

- `rpc`: gRPC servers (interceptors: auth, request ids, error mapping, tracing), channels, TLS,
  keepalive, readiness probes.
- `storage`: SQLAlchemy engines for SQLite and PostgreSQL, the schema, Alembic migrations,
  idempotent requests (`storage.idempotency`).
- `config`: `Settings`, read once from `COHORT_*` variables.
- `errors`: domain errors (`InvalidArgument("field.path", "why")`, ...), mapped to gRPC codes by `rpc`.
- `context`: the caller and request id of the running RPC; the `Authenticator` protocol.
- `identity`: the API-key format and the system actor.
- `ids`, `timestamps`, `paging`, `urls`: UUIDv7 ids, datetime ⇄ `Timestamp`, page tokens, URL helpers.
- `redis_client`, `transient`, `event_loop`, `tracing`: Redis connections, which failures are
  worth a retry, uvloop, OpenTelemetry.

Import the module you need (`from cohort.platform.errors import NotFound`): this file imports
nothing, so the agent SDK can load `cohort.platform.errors` without the rest of the platform.
"""
