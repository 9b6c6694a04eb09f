"""The server's two HTTP protocols, for tests that run against both."""

PARSERS = ["httptools", "h11"]
"""Callbacks answered in the protocol (httptools), and the h11 fallback that serves them
through ASGI (``ServerSettings.http_parser``)."""
