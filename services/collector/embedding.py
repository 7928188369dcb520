"""A model-free text embedder: feature hashing of word unigrams and bigrams.

Deterministic across processes and machines (tokens are hashed with CRC-32, never with Python's
randomized `hash`), needs no model files and costs microseconds per text. Each token or bigram adds
+1 or -1 (a second hash bit) to one of `DIMENSIONS` buckets; the vector is L2-normalized float32, so
the dot product of two embeddings is their cosine similarity. An empty text embeds to all zeros.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Sequence

import numpy as np

DIMENSIONS = 256
"""Length of every embedding (float32, so 1 KiB stored per trajectory)."""

MAX_TOKENS = 512
"""Tokens per text beyond which the rest is ignored (keeps the cost of one text bounded)."""

BIGRAM_WEIGHT = 0.5

_TOKEN = re.compile(r"[a-z0-9]+(?:[_'.-][a-z0-9]+)*")
_CACHE_LIMIT = 200_000

_features: dict[str, tuple[int, float]] = {}
"""token -> (bucket, sign): hashing is the costly part and vocabularies repeat a lot."""


def _feature(token: str) -> tuple[int, float]:
    found = _features.get(token)
    if found is None:
        digest = zlib.crc32(token.encode("utf-8"))
        found = (digest % DIMENSIONS, 1.0 if (digest >> 16) & 1 else -1.0)
        if len(_features) >= _CACHE_LIMIT:
            _features.clear()
        _features[token] = found
    return found


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens, at most `MAX_TOKENS`."""
    return _TOKEN.findall(text.lower())[:MAX_TOKENS]


def _features_of(text: str) -> tuple[list[int], list[float]]:
    words = tokens(text)
    buckets: list[int] = []
    weights: list[float] = []
    feature = _feature
    for word in words:
        bucket, sign = feature(word)
        buckets.append(bucket)
        weights.append(sign)
    for first, second in zip(words, words[1:], strict=False):
        bucket, sign = feature(first + " " + second)
        buckets.append(bucket)
        weights.append(sign * BIGRAM_WEIGHT)
    return buckets, weights


def embed_many(texts: Sequence[str] | Iterable[str]) -> np.ndarray:
    """Embeddings of `texts`, one row each: a `(len(texts), DIMENSIONS)` float32 array."""
    all_buckets: list[int] = []
    all_weights: list[float] = []
    count = 0
    for row, text in enumerate(texts):
        count = row + 1
        buckets, weights = _features_of(text)
        offset = row * DIMENSIONS
        all_buckets.extend(bucket + offset for bucket in buckets)
        all_weights.extend(weights)
    if count == 0:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    flat = np.bincount(
        np.asarray(all_buckets, dtype=np.int64),
        weights=np.asarray(all_weights, dtype=np.float64),
        minlength=count * DIMENSIONS,
    )
    matrix = flat.reshape(count, DIMENSIONS).astype(np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    np.divide(matrix, norms, out=matrix, where=norms > 0)
    return matrix


def embed(text: str) -> np.ndarray:
    """The embedding of one text: a `(DIMENSIONS,)` float32 vector, L2-normalized (or all zeros)."""
    return embed_many([text])[0]


def from_bytes(blob: bytes) -> np.ndarray:
    """A stored embedding back as a float32 vector."""
    return np.frombuffer(blob, dtype=np.float32)
