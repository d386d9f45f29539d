from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REFERENCE = Path(__file__).resolve().parents[3] / ".." / "shared" / "reference"
VECTORS = REFERENCE / "kayenta_vectors.json"


def load_vectors() -> dict[str, Any] | None:
    if not VECTORS.is_file():
        return None
    return json.loads(VECTORS.read_text())


@pytest.fixture(scope="session")
def vectors() -> dict[str, Any]:
    data = load_vectors()
    if data is None:
        pytest.skip(f"reference vectors absent: {VECTORS} (shared/reference is not checked in)")
    return data
