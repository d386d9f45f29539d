"""The soak suite (`make soak`: MESHLENS_SOAK=1 pytest -m slow tests/soak). Long runs of the
reliability tests; collected only with MESHLENS_SOAK=1 so `make test` never starts them."""

from __future__ import annotations

import os

from tests.collector.conftest import running_serve, serve_factory

__all__ = ["running_serve", "serve_factory"]

if os.environ.get("MESHLENS_SOAK") != "1":
    collect_ignore_glob = ["test_*.py"]
