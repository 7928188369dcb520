"""Secret redaction: every kind of secret, on text, JSON values and trajectories."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.sdk.trajectories import redaction
from cohort.sdk.trajectories.redaction import DEFAULT_RULES, RedactionRule, Redactor, placeholder

# (rule, text around the secret, the secret) -- test values only, none of them real.
SECRETS = [
    ("openai_api_key", "key: {}", "sk-abcdEFGH1234ijklMNOP5678qrstUVWX90yzABCDEFGH"),
    ("openai_api_key", "OPENAI_API_KEY={}", "sk-proj-Ab3dEf6hIj9kLmNoPqRsTuVwXyZ012345678_-ab"),
    (
        "anthropic_api_key",
        "export ANTHROPIC_API_KEY={}",
        "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcdEF",
    ),
    ("aws_access_key_id", "aws_access_key_id = {}", "AKIAIOSFODNN7EXAMPLE"),
    ("aws_access_key_id", "AWS_ACCESS_KEY_ID={} # session", "ASIAY34FZKBOKMUTVV7A"),
    ("github_token", "git clone https://{}@github.com/o/r", "ghp_1234567890abcdefghijklmnopqrstuvwxyz"),
    ("github_token", "GH_TOKEN={}", "gho_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"),
    ("github_token", "token {}", "ghs_0123456789abcdefghijklmnopqrstuvwxyz"),
    ("github_token", "token {}", "ghu_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    (
        "github_token",
        "token {} ok",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVW",
    ),
    ("slack_token", "SLACK_BOT_TOKEN={}", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
    ("slack_token", "user token {}", "xoxp-123456789012-1234567890123-1234567890123-abcdef0123456789"),
    ("google_api_key", "?key={}&q=1", "AIzaSyA1234567890abcdefghijklmnopqrstuv"),
    ("bearer_token", "use bearer {} for this", "tok_9f8e7d6c5b4a3"),
    (
        "authorization_header",
        "curl -H 'Authorization: Bearer {}' https://api.example.com",
        "abc123def456ghi789",
    ),
    ("authorization_header", "Authorization: Basic {}", "dXNlcjpwYXNzd29yZA=="),
    ("authorization_header", '{{"authorization": "{}"}}', "token-7f3a9b2c1d"),
    ("url_password", "DATABASE_URL=postgres://admin:{}@db.internal:5432/app", "hunter2-Secret"),
    ("url_password", "redis://:{}@cache:6379/0 is wrong but", "s3cr3t"),
    (
        "jwt",
        "cookie session={}; path=/",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ),
    (
        "private_key",
        "key file:\n{}\nend",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1234abcd\nQ2xvdWQgc2VjcmV0\n"
        "-----END RSA PRIVATE KEY-----",
    ),
    (
        "private_key",
        "{}",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
    ),
]
IDS = [f"{rule}-{i}" for i, (rule, _, _) in enumerate(SECRETS)]

ORDINARY = [
    "The Bearer authentication scheme is described in RFC 6750; bearer tokens expire.",
    "Ask the disk-management-subsystem team, or use sk-learn-compatible-estimators.",
    "Run 123e4567-e89b-12d3-a456-426614174000 against sha256 "
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 "
    "and commit 4b825dc642cb6eb9a060e54bf8d69288fbee4904.",
    "Authorization: required for admins only. See https://example.com/path?q=1 and mailto:user@example.com.",
    "Connect to https://user@example.com/repo.git or ssh://git@github.com:22/o/r.git",
    "The AKIA prefix marks AWS keys; ghp_ marks GitHub tokens; AIza marks Google keys; xoxb- is Slack.",
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
    "def authorize(user):\n    return user.is_admin  # Authorization: see policy.md",
    "Ünïcödé prose with émojis 🎉 and numbers 1234567890 stays as it is.",
]


def _expected(rule: str, secret: str) -> str:
    return f"[REDACTED:{rule}:{hashlib.sha256(secret.encode()).hexdigest()[:8]}]"


@pytest.mark.parametrize(("rule", "template", "secret"), SECRETS, ids=IDS)
def test_each_secret_kind_is_redacted_in_text(rule, template, secret):
    text = template.format(secret)
    redacted = Redactor().redact_text(text)
    assert secret not in redacted
    assert redacted == template.format(_expected(rule, secret))


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_is_untouched(text):
    assert Redactor().redact_text(text) == text


def test_placeholders_are_deterministic_and_distinguish_secrets():
    a, b = "sk-abcdEFGH1234ijklMNOP5678qrstUVWX90yz", "sk-abcdEFGH1234ijklMNOP5678qrstUVWX90yZ"
    first = Redactor().redact_text(f"{a} {b} {a}")
    pa, pb = placeholder("openai_api_key", a), placeholder("openai_api_key", b)
    assert first == f"{pa} {pb} {pa}"
    assert pa != pb
    assert Redactor().redact_text(a) == redaction.redact_text(a) == pa


def test_redaction_is_idempotent():
    text = "Authorization: Bearer sk-proj-Ab3dEf6hIj9kLmNoPqRsTuVwXyZ012345678 and postgres://u:pw123@h/db"
    once = Redactor().redact_text(text)
    assert Redactor().redact_text(once) == once


def test_user_added_rule():
    rule = RedactionRule("employee_id", re.compile(r"\bEMP-(\d{6})\b"), group=1)
    redactor = Redactor().with_rules(rule)
    assert redactor.redact_text("badge EMP-123456") == f"badge EMP-{placeholder('employee_id', '123456')}"
    assert Redactor().redact_text("badge EMP-123456") == "badge EMP-123456"
    assert len(redactor.rules) == len(DEFAULT_RULES) + 1
    t = trajectory_pb2.Trajectory(task="look up EMP-654321")
    assert redactor.redact_trajectory(t) == 1 and "654321" not in t.task


def _trajectory_with_secrets() -> trajectory_pb2.Trajectory:
    t = trajectory_pb2.Trajectory(task="deploy with AKIAIOSFODNN7EXAMPLE")
    t.labels["token"] = "ghp_1234567890abcdefghijklmnopqrstuvwxyz"
    t.labels["split"] = "train"
    interaction = t.llm_interactions.add()
    interaction.input_messages.add(
        role="user", content="my key is sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123"
    )
    interaction.tools_available.append("bash")
    interaction.response.tool_calls.add(
        call_id="c1",
        name="bash",
        arguments_json=json.dumps(
            {"command": "curl", "env": {"headers": ["Authorization: Bearer abc123def456ghi789"]}}
        ),
    )
    step = t.agent_steps.add(step_number=1)
    step.tool_results.add(call_id="c1", success=True, result="connected to mysql://root:Tr0ub4dor@db:3306")
    step.llm_messages.add(
        role="user", content_json=json.dumps([{"type": "text", "text": "xoxb-1234567890-abcdefghij"}])
    )
    t.extra_json = json.dumps(
        {"note": "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg\n-----END EC PRIVATE KEY-----"}
    )
    return t


def test_trajectory_every_string_field_including_json_texts_and_maps():
    t = _trajectory_with_secrets()
    assert Redactor().redact_trajectory(t) == 7
    text = str(t)
    for secret in (
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_1234",
        "sk-ant-",
        "abc123def456",
        "Tr0ub4dor",
        "xoxb-",
        "MHcCAQEEIBkg",
    ):
        assert secret not in text
    # JSON texts stay valid JSON, with the placeholder inside the right string.
    arguments = json.loads(t.llm_interactions[0].response.tool_calls[0].arguments_json)
    assert arguments["env"]["headers"][0].startswith("Authorization: Bearer [REDACTED:authorization_header:")
    assert json.loads(t.agent_steps[0].llm_messages[0].content_json)[0]["text"].startswith(
        "[REDACTED:slack_token:"
    )
    assert json.loads(t.extra_json)["note"].startswith("[REDACTED:private_key:")
    assert t.labels["token"].startswith("[REDACTED:github_token:") and t.labels["split"] == "train"
    assert t.agent_steps[0].tool_results[0].result == (
        f"connected to mysql://root:{placeholder('url_password', 'Tr0ub4dor')}@db:3306"
    )
    assert list(t.llm_interactions[0].tools_available) == ["bash"]
    assert Redactor().redact_trajectory(t) == 0


def test_clean_trajectory_is_unchanged():
    t = trajectory_pb2.Trajectory(task="Summarise https://example.com/docs for me")
    t.llm_interactions.add().input_messages.add(role="user", content="Bearer of bad news")
    before = t.SerializeToString()
    assert Redactor().redact_trajectory(t) == 0
    assert t.SerializeToString() == before


def test_redact_json_value_copies():
    value = {
        "headers": {"Authorization": "Bearer abc123def456ghi789"},
        "list": ["AKIAIOSFODNN7EXAMPLE", 3, None],
    }
    redacted = redaction.redact_json_value(value)
    assert value["list"][0] == "AKIAIOSFODNN7EXAMPLE"  # the input is not modified
    assert (
        redacted["headers"]["Authorization"] == f"Bearer {placeholder('bearer_token', 'abc123def456ghi789')}"
    )
    assert redacted["list"] == [placeholder("aws_access_key_id", "AKIAIOSFODNN7EXAMPLE"), 3, None]
