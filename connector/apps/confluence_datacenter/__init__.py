"""Confluence Data Center connector (REST + legacy JSON-RPC), id-compatible with the Go connector."""
