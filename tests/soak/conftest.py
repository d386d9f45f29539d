"""Reuse the `meshlens serve` fixtures of the collector tests (serve_factory, running_serve)."""

from tests.collector.conftest import running_serve, serve_factory

__all__ = ["running_serve", "serve_factory"]
