"""Configuration: defaults, parsing, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from cohort.platform.config import DEFAULT_PORTS, ConfigError, Settings, TlsMode, TracingExporter


def test_defaults_are_the_embedded_suite_on_loopback():
    settings = Settings.from_env({})
    assert settings.host == "127.0.0.1"
    assert settings.is_embedded
    assert settings.effective_database_url == f"sqlite+aiosqlite:///{Path('var') / 'cohort.db'}"
    assert dict(settings.ports) == dict(DEFAULT_PORTS)
    assert settings.auth_enabled and settings.tls.mode is TlsMode.PLAINTEXT
    assert settings.tracing is TracingExporter.NONE
    assert settings.address_of("jobs") == "127.0.0.1:50056"


def test_values_are_parsed():
    settings = Settings.from_env(
        {
            "COHORT_DATABASE_URL": "postgresql://postgres@db:5432/cohort",
            "COHORT_JOBS_PORT": "6000",
            "COHORT_TRAINER_ADDRESS": "trainer.internal:7000",
            "COHORT_MAX_MESSAGE_BYTES": "1_048_576",
            "COHORT_AUTH_ENABLED": "false",
            "COHORT_TRACING": "Console",
            "COHORT_LOG_LEVEL": "debug",
            "COHORT_GRPC_KEEPALIVE_SECONDS": "45",
        }
    )
    assert settings.database_url == "postgresql+asyncpg://postgres@db:5432/cohort"
    assert not settings.is_embedded
    assert settings.ports["jobs"] == 6000
    assert settings.address_of("trainer") == "trainer.internal:7000"
    assert settings.max_message_bytes == 1_048_576
    assert settings.auth_enabled is False
    assert settings.tracing is TracingExporter.CONSOLE
    assert settings.log_level == "DEBUG"
    assert settings.keepalive_seconds == 45.0


def test_settings_are_frozen():
    settings = Settings.from_env({})
    with pytest.raises(AttributeError):
        settings.host = "0.0.0.0"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("COHORT_JOBS_PORT", "http", "not an integer"),
        ("COHORT_JOBS_PORT", "70000", "outside 0..65535"),
        ("COHORT_MAX_MESSAGE_BYTES", "12", "outside"),
        ("COHORT_RPC_TIMEOUT_SECONDS", "-1", ">= 0.001"),
        ("COHORT_RPC_TIMEOUT_SECONDS", "soon", "not a number"),
        ("COHORT_GRPC_KEEPALIVE_SECONDS", "0.5", ">= 1.0"),
        ("COHORT_GRPC_KEEPALIVE_SECONDS", "inf", "finite"),
        ("COHORT_AUTH_ENABLED", "maybe", "not a boolean"),
        ("COHORT_TRACING", "jaeger", "none, console, otlp"),
        ("COHORT_LOG_LEVEL", "LOUD", "not one of"),
        ("COHORT_DATABASE_URL", "mysql://x/y", "unsupported database URL scheme"),
        ("COHORT_REDIS_URL", "localhost:6379", "not a redis://"),
        ("COHORT_COLLECTOR_ADDRESS", "collector", "not host:port"),
        ("COHORT_HOST", "not a host", "not a host name"),
        ("COHORT_DATABASE_SCHEMA", "Robert'); DROP", "SQL identifier"),
        ("COHORT_TLS_MODE", "maybe", "plaintext, tls, mtls"),
        ("COHORT_TLS_CERT_FILE", "/nonexistent/cert.pem", "not a readable file"),
    ],
)
def test_a_malformed_value_names_the_variable(variable, value, says):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")
    assert says in str(caught.value)


def test_listening_beyond_loopback_needs_an_explicit_tls_choice():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"COHORT_HOST": "0.0.0.0"})
    assert caught.value.variable == "COHORT_TLS_MODE"
    explicit = Settings.from_env({"COHORT_HOST": "0.0.0.0", "COHORT_TLS_MODE": "plaintext"})
    assert explicit.host == "0.0.0.0"
    assert explicit.address_of("jobs") == "127.0.0.1:50056"


def test_tls_needs_its_files(tmp_path):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"COHORT_TLS_MODE": "mtls"})
    assert caught.value.variable == "COHORT_TLS_CERT_FILE"
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"COHORT_TLS_MODE": "tls", "COHORT_TLS_CERT_FILE": str(cert)})
    assert caught.value.variable == "COHORT_TLS_KEY_FILE"
