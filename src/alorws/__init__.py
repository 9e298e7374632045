"""alorws: fast, safe asyncio toolkit for the ALOR Broker WebSocket API."""

__version__ = "0.1.0"
