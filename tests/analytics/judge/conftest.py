from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

# Copied from ../shared/reference/kayenta_vectors.json; its "provenance" key names the Kayenta
# and Flagger sources (spinnaker/kayenta a69573be9d8f, fluxcd/flagger 15bd6ad555e6).
VECTORS = Path(__file__).resolve().parents[1] / "reference" / "kayenta_vectors.json"


def load_vectors() -> dict[str, Any] | None:
    if not VECTORS.is_file():
        return None
    return json.loads(VECTORS.read_text())


@pytest.fixture(scope="session")
def vectors() -> dict[str, Any]:
    data = load_vectors()
    if data is None:
        pytest.fail(f"reference vectors missing: {VECTORS}")
    return data
