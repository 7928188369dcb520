"""The gRPC runtime every Cohort service shares.

- `cohort.rpc.server`: `start_server`, `ServiceRegistration`, `RunningServer`, `serve_until_signal`.
- `cohort.rpc.client`: `ChannelPool` (reused channels with credentials and deadlines), `error_info`.
- `cohort.rpc.interceptors`: request id, authentication, domain-error mapping.
- `cohort.rpc.tls`: credentials from `TlsSettings`.

Nothing is re-exported here, so `cohort.tracing` (which builds on the interceptors) can be imported
without pulling in the server and client modules.
"""
