"""gRPC status normalization: Envoy prints names (CAMEL_STRING by default, SNAKE_STRING) or
numbers depending on version and format; one stored form whatever the path."""

from __future__ import annotations

import pytest

from meshlens.collector.store.grpc_status import code_of, normalize


# Envoy's own access-log test (test/common/access_log/access_log_impl_test.cc,
# ValidGrpcStatusMessage): for grpc-status 0 it prints "OK 0 OK OK OK 0" for
# %GRPC_STATUS% %GRPC_STATUS_NUMBER% %GRPC_STATUS()% %GRPC_STATUS(CAMEL_STRING)%
# %GRPC_STATUS(SNAKE_STRING)% %GRPC_STATUS(NUMBER)%.
@pytest.mark.parametrize("printed", ["OK", "0", "OK", "OK", "OK", "0"])
def test_every_envoy_form_of_ok_is_0(printed: str) -> None:
    assert normalize(printed) == "0"


@pytest.mark.parametrize(
    ("printed", "stored"),
    [
        ("Unavailable", "14"),
        ("UNAVAILABLE", "14"),
        ("14", "14"),
        ("DeadlineExceeded", "4"),
        ("DEADLINE_EXCEEDED", "4"),
        ("ResourceExhausted", "8"),
        ("Canceled", "1"),
        ("CANCELLED", "1"),
        ("Unauthenticated", "16"),
        ("-", ""),
        ("", ""),
        (None, ""),
        ("NotAStatus", "NotAStatus"),  # kept as it came: nothing is lost
    ],
)
def test_names_and_numbers_become_the_decimal_code(printed: str | None, stored: str) -> None:
    assert normalize(printed) == stored


def test_code_of() -> None:
    assert code_of("Internal") == 13 and code_of("-") is None and code_of("bogus") is None
