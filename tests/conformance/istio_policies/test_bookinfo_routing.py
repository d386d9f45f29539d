"""Bookinfo's stock routing files against the traffic Istio's traffic-management tasks describe.

- "Request routing" / "Traffic shifting" start from `virtual-service-all-v1.yaml` with
  `destination-rule-all(-mtls).yaml`: every reviews request on v1 ("no rating stars, no matter
  how many times you refresh"). The DestinationRules define v1, v2, v3 for reviews (and more for
  ratings and details) that no route uses: information, not a problem - the check passes.
- `virtual-service-reviews-50-v3.yaml`: "red colored star ratings approximately 50% of the
  time" (v1 50 / v3 50); `virtual-service-reviews-v3.yaml`: always red stars (v3 100/0);
  `virtual-service-reviews-90-10.yaml`: v1 90 / v2 10.
- `virtual-service-reviews-jason-v2-v3.yaml`: user jason gets v2, everyone else v3, by the
  `end-user` header, which proxies do not log: the per-route split cannot be verified (said so),
  but traffic on a version no route names (v1) is still a problem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest

from meshlens.analytics.istio.report import CheckReport
from meshlens.cli import main
from tests.conformance.istio_policies.conftest import ART, WINDOW, check, config
from tests.conformance.istio_policies.mesh import (
    DETAILS,
    FULL,
    IMPORT,
    INGRESS,
    PRODUCTPAGE,
    Call,
    bookinfo_call,
    reviews_split,
    write_traffic,
)

DR_MTLS: Final = "bookinfo/destination-rule-all-mtls.yaml"
DR: Final = "bookinfo/destination-rule-all.yaml"
REVIEWS: Final = "reviews.default.svc.cluster.local"


def page_loads_on(counts: dict[str, int]) -> list[Call]:
    """Page loads whose reviews calls landed on the given versions (no ratings calls: they do
    not matter to the reviews routes)."""
    n = sum(counts.values())
    return [
        bookinfo_call(INGRESS, PRODUCTPAGE, "/productpage", n=n, subset="v1"),
        bookinfo_call(PRODUCTPAGE, DETAILS, "/details/0", n=n, subset="v1"),
        *reviews_split(counts),
    ]


def problems(report: CheckReport) -> list[str]:
    return [f.message for f in report.problems]


@pytest.mark.parametrize("dr", [DR_MTLS, DR])
@pytest.mark.parametrize("flavour", [FULL, IMPORT])
def test_all_v1_with_the_stock_destination_rules_is_ok(
    tmp_path: Path, dr: str, flavour: str
) -> None:
    """Issue 6: the stock DestinationRules define subsets no route sends traffic to."""
    cfg = config(dr, "bookinfo/virtual-service-all-v1.yaml")
    report = check("routing", tmp_path, page_loads_on({"v1": 300}), flavour, cfg)
    assert report.ok, problems(report)
    infos = [f.message for f in report.findings if f.severity == "info"]
    for version in ("v2", "v3"):
        assert any(
            m.startswith(f"subset {version} (version={version}): no route sends traffic to it")
            and REVIEWS in m
            for m in infos
        ), infos
    reviews_rows = [r for r in report.rows if r["host"] == REVIEWS]
    assert [(r["version"], r["observed"], r["status"]) for r in reviews_rows] == [("v1", 1.0, "ok")]


def test_cli_exits_0_on_a_perfect_split(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_traffic(data, page_loads_on({"v1": 300}), FULL)
    args = ["check", "routing", "--data-dir", str(data)]
    args += [
        "--config",
        str(ART / DR_MTLS),
        "--config",
        str(ART / "bookinfo/virtual-service-all-v1.yaml"),
    ]
    args += ["--from", WINDOW.start.isoformat(), "--to", WINDOW.end.isoformat()]
    assert main(args) == 0


@pytest.mark.parametrize(
    ("vs", "observed"),
    [
        ("virtual-service-reviews-50-v3.yaml", {"v1": 150, "v3": 150}),
        ("virtual-service-reviews-50-v3.yaml", {"v1": 163, "v3": 137}),
        ("virtual-service-reviews-v3.yaml", {"v3": 300}),
        ("virtual-service-reviews-90-10.yaml", {"v1": 270, "v2": 30}),
        ("virtual-service-reviews-90-10.yaml", {"v1": 262, "v2": 38}),
    ],
)
def test_documented_splits_are_ok(tmp_path: Path, vs: str, observed: dict[str, int]) -> None:
    cfg = config(DR_MTLS, f"bookinfo/{vs}")
    report = check("routing", tmp_path, page_loads_on(observed), FULL, cfg)
    assert report.ok, problems(report)
    rows = {r["version"]: r for r in report.rows if r["host"] == REVIEWS}
    for version, k in observed.items():
        assert rows[version]["requests"] == k
        assert rows[version]["status"] == "ok"


def test_50_50_observed_as_90_10_is_off(tmp_path: Path) -> None:
    cfg = config(DR_MTLS, "bookinfo/virtual-service-reviews-50-v3.yaml")
    report = check("routing", tmp_path, page_loads_on({"v1": 270, "v3": 30}), FULL, cfg)
    msgs = problems(report)
    assert any(f"{REVIEWS} v1 got 90.0% of 300 requests, configured 50%" in m for m in msgs), msgs


def test_weighted_subset_that_got_nothing_is_one_problem(tmp_path: Path) -> None:
    """50-v3 applied, but every request still on v1: v3 is given weight and received none."""
    cfg = config(DR_MTLS, "bookinfo/virtual-service-reviews-50-v3.yaml")
    report = check("routing", tmp_path, page_loads_on({"v1": 300}), FULL, cfg)
    v3 = [m for m in problems(report) if "v3" in m]
    assert len(v3) == 1 and "is configured for 50% but got none of 300 requests" in v3[0]


def test_100_0_with_v1_traffic_left_is_traffic_the_routes_do_not_explain(tmp_path: Path) -> None:
    cfg = config(DR_MTLS, "bookinfo/virtual-service-reviews-v3.yaml")
    report = check("routing", tmp_path, page_loads_on({"v3": 280, "v1": 20}), FULL, cfg)
    msgs = problems(report)
    assert any(
        f"20 requests reached {REVIEWS} version v1, which no route of this VirtualService names"
        in m
        for m in msgs
    ), msgs


def test_header_match_route_is_not_verified_but_versions_still_are(tmp_path: Path) -> None:
    cfg = config(DR_MTLS, "bookinfo/virtual-service-reviews-jason-v2-v3.yaml")
    ok = check("routing", tmp_path / "ok", page_loads_on({"v2": 40, "v3": 260}), FULL, cfg)
    assert ok.ok, problems(ok)
    notes = [f.message for f in ok.findings if f.severity == "info"]
    assert any("not verified: header 'end-user' is not in telemetry" in m for m in notes), notes
    stray = check(
        "routing", tmp_path / "stray", page_loads_on({"v1": 30, "v2": 40, "v3": 230}), FULL, cfg
    )
    assert any(f"30 requests reached {REVIEWS} version v1" in m for m in problems(stray)), problems(
        stray
    )
