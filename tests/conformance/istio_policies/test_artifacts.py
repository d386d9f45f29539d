"""The artifacts are Istio's, unedited, every one is sourced, and every one loads."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Final

import pytest

from meshlens.analytics.istio.resources import load_config
from tests.conformance.istio_policies.conftest import ART

# Git blob ids in istio/istio (SOURCES.md gives the commits): `git rev-parse <ref>:<path>`.
UPSTREAM_BLOBS: Final = {
    "bookinfo/destination-rule-all.yaml": "0bf3337ff10978b35fc61a602e699a034f10c4ed",
    "bookinfo/destination-rule-all-mtls.yaml": "4aea699abdb9ba9b02ac846679b223fadeb2bcab",
    "bookinfo/virtual-service-all-v1.yaml": "53e2fd717107b4e96ffe3542e580f4e0c9838d4e",
    "bookinfo/virtual-service-reviews-50-v3.yaml": "2883c635351f63ffde0cc0f87bf5f9a8aa510bfd",
    "bookinfo/virtual-service-reviews-v3.yaml": "bd2d3f6e47c26789c3e4b21a2693973074103b23",
    "bookinfo/virtual-service-reviews-90-10.yaml": "4de526f754ba792b1604468a292b127c53092d6d",
    "bookinfo/virtual-service-reviews-jason-v2-v3.yaml": "c79517b6c929c99f1ac4605d4cd5c6b4bf257570",
    "bookinfo/bookinfo.yaml": "02ba04b5932ebf9201a7723ad4a7dff049de17ac",
    "samples/httpbin.yaml": "3e81e9878364f52f4ed06af0599ec70cdb86a0ee",
    "samples/sleep.yaml": "570086b9395d34a3003c1c5b05e253006cbf04b0",
}
ARTIFACTS: Final = sorted(str(p.relative_to(ART)) for p in ART.rglob("*.yaml"))


def git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@pytest.mark.parametrize("name", sorted(UPSTREAM_BLOBS))
def test_samples_are_byte_identical_to_istio(name: str) -> None:
    assert git_blob((ART / name).read_bytes()) == UPSTREAM_BLOBS[name]


def test_every_artifact_is_sourced() -> None:
    sources = (Path(__file__).parent / "SOURCES.md").read_text()
    assert len(ARTIFACTS) >= 25
    missing = [a for a in ARTIFACTS if f"`{a}`" not in sources]
    assert not missing


@pytest.mark.parametrize("name", ARTIFACTS)
def test_every_artifact_loads_as_kubectl_would(name: str) -> None:
    cfg = load_config([ART / name])
    assert cfg.resources or cfg.workloads or cfg.services
