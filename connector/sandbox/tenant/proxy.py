"""A corporate HTTP proxy, as small as it can be: HTTP CONNECT tunnels on loopback.

It records every CONNECT target, may require `Proxy-Authorization: Basic ...`, and resolves host names from
its own table (like a proxy that does DNS the client cannot do), so a test can point a client at a name
that only works *through* the proxy. Anything but CONNECT is refused with 405, as a CONNECT-only egress
proxy would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from connector.sandbox.tenant.streams import close_writer, pipe


@dataclass
class ConnectRecord:
    target: str  # host:port as requested
    status: int
    user_agent: str = ""


@dataclass
class ConnectProxy:
    hosts: Mapping[str, str] = field(default_factory=dict)  # name -> address the proxy connects to
    credentials: tuple[str, str] | None = None  # (user, password) required, or None
    records: list[ConnectRecord] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen; returns the proxy URL (`http://host:port`)."""
        self._server = await asyncio.start_server(self._accept, host, port)
        bound = self._server.sockets[0].getsockname()[1]
        return f"http://{host}:{bound}"

    @property
    def targets(self) -> list[str]:
        return [r.target for r in self.records if r.status == 200]

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._handle(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, _, rest = lines[0].partition(" ")
            target = rest.partition(" ")[0]
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            ua = headers.get("user-agent", "")
            if method != "CONNECT":
                self.records.append(ConnectRecord(target, 405, ua))
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            if self.credentials is not None:
                expected = base64.b64encode(":".join(self.credentials).encode()).decode()
                if headers.get("proxy-authorization", "") != f"Basic {expected}":
                    self.records.append(ConnectRecord(target, 407, ua))
                    writer.write(
                        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                        b'Proxy-Authenticate: Basic realm="proxy"\r\nContent-Length: 0\r\n\r\n'
                    )
                    return
            host, _, port = target.rpartition(":")
            host = host.strip("[]")
            try:
                up_reader, upstream = await asyncio.open_connection(self.hosts.get(host, host), int(port))
            except (OSError, ValueError):
                self.records.append(ConnectRecord(target, 502, ua))
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            self._writers.add(upstream)
            self.records.append(ConnectRecord(target, 200, ua))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(pipe(reader, upstream), pipe(up_reader, writer))
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            for w in (writer, upstream):
                if w is not None:
                    self._writers.discard(w)
                    close_writer(w)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            close_writer(w)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
