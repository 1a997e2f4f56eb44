"""Exact bytes to and from a server on 127.0.0.1: for requests no HTTP client would send, and answers checked
header by header."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from yarl import URL


@dataclass
class RawAnswer:
    status_line: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def status(self) -> int:
        return int(self.status_line.split(" ", 2)[1])

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)


def parse_answer(data: bytes) -> RawAnswer:
    """One answer with its head; the body is whatever followed it (read until the server closed)."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = [(name, value.strip()) for name, _, value in (line.partition(":") for line in lines[1:])]
    return RawAnswer(lines[0], headers, body)


async def send_raw(url: str, data: bytes, *, timeout_s: float = 5.0) -> bytes:
    """Write ``data``, then read until the server closes the connection or ``timeout_s`` passes."""
    target = URL(url)
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        writer.write(data)
        await writer.drain()
        received = bytearray()
        try:
            async with asyncio.timeout(timeout_s):
                while chunk := await reader.read(65536):
                    received += chunk
        except TimeoutError:
            pass
        return bytes(received)
    finally:
        writer.close()


async def fetch_raw(url: str, request: bytes, *, timeout_s: float = 5.0) -> RawAnswer:
    """One request (it should ask ``Connection: close``) and its answer."""
    return parse_answer(await send_raw(url, request, timeout_s=timeout_s))
