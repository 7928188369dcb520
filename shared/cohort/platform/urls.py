"""URL helpers shared by the database and Redis clients."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "***"

_SECRET_QUERY_KEYS = frozenset({"password", "passwd", "pass", "pwd", "secret", "token"})


def redact_url(url: str) -> str:
    """`url` with any password (in the userinfo or the query string) replaced by `***`.

    Safe to put in logs and error messages. Works for database URLs (`postgresql+asyncpg://u:p@h/db`)
    and Redis URLs (`redis://:p@h:6379/0`, `redis://h?password=p`) alike; a string that is not a URL
    comes back unchanged.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        if has_password:
            netloc = f"{user}:{REDACTED}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key.lower() in _SECRET_QUERY_KEYS for key, _ in pairs):
            query = urlencode(
                [(key, REDACTED if key.lower() in _SECRET_QUERY_KEYS else value) for key, value in pairs],
                safe="*",
            )
    if netloc == parts.netloc and query == parts.query:
        return url  # untouched: urlunsplit would also drop the "//" of "sqlite:///path"
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
