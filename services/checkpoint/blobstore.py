"""Where checkpoint files live: a small blob-store interface and its local-directory implementation.

A checkpoint is a set of named files plus a manifest (`MANIFEST.json`, every file's size and sha256),
stored under a key (the checkpoint id). The store only has to publish a complete set, read a file back,
delete a set, and list what it holds; the database row, written after `publish` returns, is what
makes a checkpoint committed. An object store can implement the same interface later (objects under
a staging prefix, then the manifest last); nothing else in the service touches the file system.

Every method blocks: the service calls them from worker threads (`asyncio.to_thread`).

`LocalBlobStore` layout: `<root>/<key>/<name>` for published checkpoints, `<root>/.staging-<key>/`
while one is being written. Publishing writes every file, writes the manifest last, fsyncs them all,
fsyncs the staging directory, renames it to `<root>/<key>` and fsyncs `<root>`, so after a
crash a key is either absent, fully present, or left in a staging directory that start-up removes.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from enum import StrEnum
from pathlib import Path
from typing import Protocol

MANIFEST_NAME = "MANIFEST.json"
STAGING_PREFIX = ".staging-"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_FSYNC_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="checkpoint-fsync")


class SaveStage(StrEnum):
    """Points of a save where a fault can be injected (tests) to stand for a crash there."""

    BEFORE_FSYNC = "before_fsync"
    """Every file written to the staging directory, nothing fsynced yet, no manifest."""
    BEFORE_RENAME = "before_rename"
    """Everything fsynced, the staging directory not yet renamed into place."""
    BEFORE_COMMIT = "before_commit"
    """Renamed into place; the database row added but its transaction not yet committed."""


StageHook = Callable[[SaveStage], None]


class BlobStore(Protocol):
    """Storage for the files of checkpoints, by key. Blocking; call from a worker thread."""

    def publish(
        self,
        key: str,
        files: Sequence[tuple[str, bytes]],
        manifest: Callable[[], bytes],
        on_stage: StageHook | None = None,
    ) -> None:
        """Durably stores `files`, then the manifest, under `key`, all or nothing. `manifest` is called
        once the files are written, so the caller can hash them meanwhile."""
        ...

    def read(self, key: str, name: str) -> bytes:
        """A file's content; `FileNotFoundError` when the key or the file is missing."""
        ...

    def delete(self, key: str) -> None:
        """Removes every file of `key`; nothing when it is absent."""
        ...

    def published_keys(self) -> list[str]:
        """Every key whose files were published (committed or not)."""
        ...

    def remove_incomplete(self) -> list[str]:
        """Removes what unfinished publishes left behind; returns the keys they were for."""
        ...


def check_name(name: str, what: str = "name") -> str:
    if not _SAFE_NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"unsafe {what} {name!r}")
    return name


def _write_file(path: Path, content: bytes) -> int:
    """Writes `content` to a new file and returns its open descriptor (the caller fsyncs and closes)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(content)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    except BaseException:
        os.close(fd)
        raise
    return fd


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBlobStore:
    """Checkpoint files in a local directory (the default: `settings.effective_checkpoint_dir`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / check_name(key, "key")

    def publish(
        self,
        key: str,
        files: Sequence[tuple[str, bytes]],
        manifest: Callable[[], bytes],
        on_stage: StageHook | None = None,
    ) -> None:
        final = self._path(key)
        staging = self.root / f"{STAGING_PREFIX}{key}"
        self.root.mkdir(parents=True, exist_ok=True)
        if staging.exists():  # a previous attempt with this key died midway
            shutil.rmtree(staging)
        staging.mkdir()
        descriptors: list[int] = []
        syncs: list[Future[None]] = []
        try:
            for name, content in files:
                descriptors.append(_write_file(staging / check_name(name), content))
            if on_stage is not None:
                on_stage(SaveStage.BEFORE_FSYNC)
            # fsyncs in parallel (the file system can commit them together) while the caller finishes
            # hashing; the manifest is written last, once every file it lists is written.
            syncs = [_FSYNC_POOL.submit(os.fsync, fd) for fd in descriptors]
            descriptors.append(_write_file(staging / MANIFEST_NAME, manifest()))
            os.fsync(descriptors[-1])
            for sync in syncs:
                sync.result()
        finally:
            for sync in syncs:
                sync.exception()  # never close a descriptor an fsync is still using
            for fd in descriptors:
                os.close(fd)
        _fsync_directory(staging)
        if on_stage is not None:
            on_stage(SaveStage.BEFORE_RENAME)
        if final.exists():
            raise FileExistsError(f"checkpoint files for {key!r} already exist")
        os.rename(staging, final)
        _fsync_directory(self.root)

    def read(self, key: str, name: str) -> bytes:
        return (self._path(key) / check_name(name)).read_bytes()

    def delete(self, key: str) -> None:
        path = self._path(key)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(path)

    def published_keys(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            entry.name for entry in self.root.iterdir() if entry.is_dir() and _SAFE_NAME.fullmatch(entry.name)
        )

    def remove_incomplete(self) -> list[str]:
        if not self.root.is_dir():
            return []
        removed = []
        for entry in self.root.iterdir():
            if entry.name.startswith(STAGING_PREFIX):
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed.append(entry.name.removeprefix(STAGING_PREFIX))
        if removed:
            _fsync_directory(self.root)
        return sorted(removed)
