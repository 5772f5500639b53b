"""Byte plumbing shared by the tenant's TLS front end and the CONNECT proxy."""

from __future__ import annotations

import asyncio
import contextlib


def close_writer(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        if not writer.is_closing():
            writer.close()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction of a connection until EOF; either side vanishing just ends the copy."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:  # includes ssl.SSLError
        pass
    finally:
        close_writer(writer)
