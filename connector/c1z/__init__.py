"""The c1z v1 file: `C1ZF\\0` + zstd(SQLite). Writer, reader, schema, KSUIDs, timestamps."""

from connector.c1z.container import C1zError
from connector.c1z.reader import C1zReader, GrantRecord, SyncRun
from connector.c1z.writer import C1zWriter

__all__ = ["C1zError", "C1zReader", "C1zWriter", "GrantRecord", "SyncRun"]
