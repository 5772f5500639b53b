"""The aiohttp wire now lives in the shared layer (connector.sdk.transport); kept for existing imports."""

from connector.sdk.transport import AiohttpTransport

__all__ = ["AiohttpTransport"]
