"""TLS and mutual TLS between a Cohort server and a `ChannelPool` client, with generated certificates."""

from __future__ import annotations

from pathlib import Path

import grpc
import grpc.aio
import pytest
from certs import CertFiles, generate_certs

from cohort.platform.config import Settings, TlsMode, TlsSettings
from cohort.platform.rpc.client import ChannelPool
from cohort.platform.rpc.server import RunningServer, ServiceRegistration, start_server

SERVICE = "cohort.test.v1.PeerService"
PEER = f"/{SERVICE}/Peer"


async def peer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    """The common name of the client certificate the server verified, or empty."""
    names = context.auth_context().get("x509_common_name", [])
    return names[0] if names else b""


def register(servicer: object, server: grpc.aio.Server) -> None:
    handlers = {"Peer": grpc.unary_unary_rpc_method_handler(peer)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


@pytest.fixture
def certs(tmp_path: Path) -> CertFiles:
    return generate_certs(tmp_path)


async def serve(tls: TlsSettings) -> RunningServer:
    return await start_server(
        Settings(auth_enabled=False, tls=tls),
        "jobs",
        [ServiceRegistration(SERVICE, None, register)],
        authenticator=None,
        port=0,
    )


async def call_peer(server: RunningServer, tls: TlsSettings, host: str = "127.0.0.1") -> bytes:
    # A refused handshake is UNAVAILABLE, like a restart: no retries, so a refusal is seen at once.
    settings = Settings(
        tls=tls, addresses={"jobs": f"{host}:{server.port}"}, rpc_timeout_seconds=10, rpc_retry_seconds=0
    )
    async with ChannelPool(settings) as pool:
        return await pool.channel("jobs").unary_unary(PEER)(b"")


def server_tls(certs: CertFiles, mode: TlsMode) -> TlsSettings:
    return TlsSettings(
        mode=mode, cert_file=certs.server_cert, key_file=certs.server_key, ca_file=certs.ca_cert
    )


def client_mtls(certs: CertFiles) -> TlsSettings:
    return TlsSettings(
        mode=TlsMode.MTLS, cert_file=certs.client_cert, key_file=certs.client_key, ca_file=certs.ca_cert
    )


async def test_mtls_client_with_certificate_is_served(certs):
    server = await serve(server_tls(certs, TlsMode.MTLS))
    try:
        assert await call_peer(server, client_mtls(certs)) == b"cohort-test-client"
        assert await call_peer(server, client_mtls(certs), host="localhost") == b"cohort-test-client"
    finally:
        await server.stop(0)


async def test_mtls_refuses_a_client_without_certificate(certs):
    server = await serve(server_tls(certs, TlsMode.MTLS))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call_peer(server, TlsSettings(mode=TlsMode.TLS, ca_file=certs.ca_cert))
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


async def test_mtls_refuses_a_certificate_from_another_ca(certs, tmp_path):
    (tmp_path / "stranger").mkdir()
    stranger = generate_certs(tmp_path / "stranger")
    server = await serve(server_tls(certs, TlsMode.MTLS))
    try:
        foreign_client = TlsSettings(
            mode=TlsMode.MTLS,
            cert_file=stranger.client_cert,
            key_file=stranger.client_key,
            ca_file=certs.ca_cert,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call_peer(server, foreign_client)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


async def test_tls_only_serves_a_client_that_trusts_the_ca(certs):
    server = await serve(server_tls(certs, TlsMode.TLS))
    try:
        assert await call_peer(server, TlsSettings(mode=TlsMode.TLS, ca_file=certs.ca_cert)) == b""
    finally:
        await server.stop(0)


async def test_tls_client_rejects_a_server_it_does_not_trust(certs, tmp_path):
    (tmp_path / "other").mkdir()
    other = generate_certs(tmp_path / "other")
    server = await serve(server_tls(certs, TlsMode.TLS))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call_peer(server, TlsSettings(mode=TlsMode.TLS, ca_file=other.ca_cert))
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


async def test_plaintext_client_cannot_reach_a_tls_server(certs):
    server = await serve(server_tls(certs, TlsMode.TLS))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call_peer(server, TlsSettings())
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


async def test_the_whole_suite_runs_over_mtls(certs, tmp_path):
    """Every service serves mTLS, and the services reach each other with the process's certificate."""
    import aiohttp

    from cohort.platform.config import GRPC_SERVICE_NAMES
    from cohort.platform.rpc.probe import grpc_health
    from cohort.services.suite import start_suite

    tls = server_tls(certs, TlsMode.MTLS)
    suite = await start_suite(Settings(data_dir=tmp_path / "var", tls=tls), ["all"], ephemeral_ports=True)
    try:
        for name in GRPC_SERVICE_NAMES:
            assert await grpc_health(suite.context.channels.channel(name)) == "SERVING", name
        # The gateway's backend checks travel over the same mTLS channels.
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{suite.address('gateway')}/healthz") as response:
                assert (await response.json())["status"] == "SERVING"
        # A client without a certificate is refused by every service.
        plain_tls = TlsSettings(mode=TlsMode.TLS, ca_file=certs.ca_cert)
        async with ChannelPool(suite.settings.with_overrides(tls=plain_tls)) as pool:
            for name in GRPC_SERVICE_NAMES:
                assert await grpc_health(pool.channel(name)) == "UNREACHABLE", name
    finally:
        await suite.stop(0)
