"""A lean HTTP/1.1 keep-alive client for load generation: one connection, one request at a time.

On a 2-core machine the load generator shares a core with the services behind the one under test.
aiohttp's client spends about as much CPU per request as the gateway does, which turns the
benchmark into a measure of its own queueing; this client sends prebuilt request bytes and reads only
the status line and Content-Length, at a fraction of that cost.
"""

from __future__ import annotations

import asyncio


class HttpConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self._reader = reader
        self._writer = writer
        self._host = host

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConnection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}")

    def post_bytes(self, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        """The whole request, built once and sent many times."""
        lines = [f"POST {path} HTTP/1.1", f"Host: {self._host}", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """(status, body) of the answer to `request` (as built by `post_bytes`)."""
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
                break
        return status, await self._reader.readexactly(length)

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()
