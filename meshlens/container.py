"""The container image's entrypoint (`python -m meshlens.container`, see
deploy/docker/Dockerfile).

The same as `meshlens`, except that `serve` refuses to start open on a network: the image binds
0.0.0.0, where anyone who reaches the ports could write telemetry and query the API. A
non-loopback --host needs a bearer token (MESHLENS_AUTH_TOKEN) or client certificates
(--tls-client-ca); MESHLENS_ALLOW_OPEN=true opts out, for when something else guards the ports
(a NetworkPolicy, the mesh's STRICT mTLS plus an AuthorizationPolicy). Other commands, and
`serve` on loopback (`meshlens demo` too), run unchanged.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Sequence

from meshlens.cli import build_parser
from meshlens.cli import main as cli_main
from meshlens.collector.errors import ConfigError
from meshlens.settings import ALLOW_OPEN


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def open_problem(host: str, auth_token: str, tls_client_ca: str) -> str:
    """Why serving on `host` with these credentials is open to anyone ('' when it is not)."""
    if auth_token or tls_client_ca or is_loopback(host):
        return ""
    return (
        f"refusing to serve on {host} with no authentication: set MESHLENS_AUTH_TOKEN "
        "(e.g. from a Kubernetes Secret) or client certificates (MESHLENS_TLS_CERT, "
        "MESHLENS_TLS_KEY, MESHLENS_TLS_CLIENT_CA); MESHLENS_ALLOW_OPEN=true runs open anyway "
        "when a NetworkPolicy or the mesh guards the ports"
    )


def check(argv: Sequence[str]) -> str:
    """The refusal for this command line in this environment ('' to run it)."""
    if list(argv[:1]) != ["serve"]:
        return ""
    try:
        if ALLOW_OPEN.resolve(os.environ):
            return ""
    except ConfigError as exc:
        return str(exc)
    parser, _module = build_parser("serve")
    # Parsed exactly as `meshlens serve` will parse it (flags beat the environment).
    args, _rest = parser.parse_known_args(list(argv[1:]))
    return open_problem(str(args.host), str(args.auth_token or ""), str(args.tls_client_ca or ""))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    problem = check(args)
    if problem:
        print(f"meshlens serve: {problem}", file=sys.stderr)
        return 2
    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
