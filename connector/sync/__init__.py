"""The sync engine: drives a connector through c1.connector.v2 and writes a c1z."""

from connector.sync.engine import SyncError, SyncOptions, run_sync
from connector.sync.report import SyncReport, format_report

__all__ = ["SyncError", "SyncOptions", "SyncReport", "format_report", "run_sync"]
