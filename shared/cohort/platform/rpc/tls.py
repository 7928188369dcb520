"""gRPC credentials from `TlsSettings`: plaintext, server-authenticated TLS, or mutual TLS.

Certificates are read when credentials are first built and cached per `TlsSettings`, so every
server and channel of a process shares one read of the files (a rotated certificate takes effect on
restart).
"""

from __future__ import annotations

import functools
from pathlib import Path

import grpc

from cohort.platform.config import ConfigError, TlsMode, TlsSettings


def _read(path: Path | None, variable: str, mode: TlsMode) -> bytes:
    if path is None:
        raise ConfigError(variable, f"required when COHORT_TLS_MODE={mode.value}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(variable, f"cannot read {path}: {exc.strerror}") from exc


@functools.cache
def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials | None:
    """None for plaintext; under mTLS clients must present a certificate signed by `ca_file`."""
    if tls.mode is TlsMode.PLAINTEXT:
        return None
    pair = (
        _read(tls.key_file, "COHORT_TLS_KEY_FILE", tls.mode),
        _read(tls.cert_file, "COHORT_TLS_CERT_FILE", tls.mode),
    )
    if tls.mode is TlsMode.TLS:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials(
        [pair],
        root_certificates=_read(tls.ca_file, "COHORT_TLS_CA_FILE", tls.mode),
        require_client_auth=True,
    )


@functools.cache
def channel_credentials(tls: TlsSettings) -> grpc.ChannelCredentials | None:
    """None for plaintext; servers are verified against `ca_file` (system roots when unset under TLS)."""
    if tls.mode is TlsMode.PLAINTEXT:
        return None
    if tls.mode is TlsMode.TLS:
        root = _read(tls.ca_file, "COHORT_TLS_CA_FILE", tls.mode) if tls.ca_file is not None else None
        return grpc.ssl_channel_credentials(root_certificates=root)
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca_file, "COHORT_TLS_CA_FILE", tls.mode),
        private_key=_read(tls.key_file, "COHORT_TLS_KEY_FILE", tls.mode),
        certificate_chain=_read(tls.cert_file, "COHORT_TLS_CERT_FILE", tls.mode),
    )
