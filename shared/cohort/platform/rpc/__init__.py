"""The gRPC runtime every Cohort service shares.

- `cohort.platform.rpc.server`: `start_server`, `ServiceRegistration`, `RunningServer`, `serve_until_signal`.
- `cohort.platform.rpc.client`: `ChannelPool` (reused channels with credentials and deadlines), `error_info`.
- `cohort.platform.rpc.interceptors`: request id, authentication, domain-error mapping.
- `cohort.platform.rpc.tls`: credentials from `TlsSettings`.

Nothing is re-exported here, so `cohort.platform.tracing` (which builds on the interceptors) can be imported
without pulling in the server and client modules.
"""
