"""The `cohort.platform.context.Authenticator` every server of a process is given: key lookups,
cached briefly."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from cohort.platform.context import Identity
from cohort.services.identity.service import ApiKeyService


@dataclass(frozen=True)
class _CacheEntry:
    identity: Identity
    expires_at: float


class ApiKeyAuthenticator:
    """`cohort.platform.context.Authenticator` over an `ApiKeyService`, caching successful lookups briefly.

    The cache is keyed by the SHA-256 of the whole token (the plaintext is never kept) and holds a
    lookup for `cache_seconds`; 0 disables it. Revocations through the same service drop the key
    from the cache at once; a revocation in another process takes effect within `cache_seconds`.
    Failed lookups are never cached.
    """

    def __init__(
        self,
        keys: ApiKeyService,
        cache_seconds: float,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if cache_seconds < 0:
            raise ValueError("cache_seconds must be >= 0")
        self._keys = keys
        self._ttl = cache_seconds
        self._max_entries = max_entries
        self._clock = clock
        self._cache: dict[bytes, _CacheEntry] = {}
        # Bumped by invalidate(), so a lookup that was in flight during a revocation is not cached.
        self._generation = 0
        keys.add_revocation_listener(self.invalidate)

    async def authenticate(self, token: str) -> Identity:
        if self._ttl <= 0:
            return await self._keys.lookup(token)
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        entry = self._cache.get(digest)
        if entry is not None and entry.expires_at > self._clock():
            return entry.identity
        generation = self._generation
        identity = await self._keys.lookup(token)
        if generation == self._generation:
            self._remember(digest, identity)
        return identity

    def invalidate(self, key_id: str) -> None:
        """Forget any cached lookup of this key (call after revoking it)."""
        self._generation += 1
        for digest in [d for d, e in self._cache.items() if e.identity.key_id == key_id]:
            del self._cache[digest]

    def clear(self) -> None:
        self._generation += 1
        self._cache.clear()

    def _remember(self, digest: bytes, identity: Identity) -> None:
        now = self._clock()
        if len(self._cache) >= self._max_entries:
            for d in [d for d, e in self._cache.items() if e.expires_at <= now]:
                del self._cache[d]
            while len(self._cache) >= self._max_entries:
                del self._cache[next(iter(self._cache))]
        self._cache[digest] = _CacheEntry(identity, now + self._ttl)
