"""Paging for every list and search RPC: page-size bounds and opaque keyset page tokens.

A token carries the keyset position after the last row of a page, bound to the query that issued it
(`scope`: anything JSON-serializable that identifies the tenant, filters and ordering), so it cannot
be replayed against another tenant or another filter. Proto `page_size = 0` means
`DEFAULT_PAGE_SIZE`; that conversion happens where requests are read, and domain code checks the
result with `check_page_size`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from cohort.platform.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_PAGE_TOKEN_LENGTH = 1024


def check_page_size(page_size: int) -> int:
    """`page_size` when it is an int in 1..MAX_PAGE_SIZE, else `InvalidArgument("page_size")`."""
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"must be between 1 and {MAX_PAGE_SIZE}")
    return page_size


def _fingerprint(scope: Any) -> str:
    material = json.dumps(scope, separators=(",", ":"), sort_keys=True, default=str)
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def encode_page_token(scope: Any, position: list[Any]) -> str:
    """An opaque token for the page after `position` (JSON values) of the query `scope` identifies."""
    body = json.dumps({"q": _fingerprint(scope), "k": position}, separators=(",", ":"), default=str)
    return base64.urlsafe_b64encode(body.encode()).decode("ascii").rstrip("=")


def decode_page_token(token: str, scope: Any) -> list[Any] | None:
    """The position a token carries (None for an empty token); `InvalidArgument("page_token")` for a
    malformed token or one issued for another query."""
    if not token:
        return None
    invalid = InvalidArgument("page_token", "is not a token returned by a previous call")
    if len(token) > MAX_PAGE_TOKEN_LENGTH:
        raise invalid
    try:
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        position, fingerprint = body["k"], body["q"]
    except (ValueError, KeyError, TypeError, UnicodeError, binascii.Error) as exc:
        raise invalid from exc
    if not isinstance(position, list):
        raise invalid
    if fingerprint != _fingerprint(scope):
        raise InvalidArgument("page_token", "was issued for a different query (tenant, filters or ordering)")
    return position
