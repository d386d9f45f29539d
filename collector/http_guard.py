"""Browser guards for an HTTP port without a bearer token: pure checks on method and headers.

With no token, anything that can reach the port may call it, including a web page the operator
opens. A browser can send two kinds of request without asking the server first (CORS "simple"
requests): a cross-site POST with a text/plain or form body, and (after DNS rebinding) a
same-origin request to a host name the attacker controls. So, when no token is set:

- Host must name this server: an IP literal, a loopback name, a single-label name, the bind
  address, or an allowed host (`*.suffix` patterns). Rebinding needs a public name the
  attacker's DNS answers, so IP literals and single-label names cannot be rebound.
- Origin, when sent, must be the Host itself (same origin); `Origin: null` is refused.
- A request with a body must be JSON (application/json or */*+json): the CORS-simple types
  text/plain, application/x-www-form-urlencoded and multipart/form-data are refused, so a
  cross-site form or `fetch(..., {mode: "no-cors"})` cannot reach a handler. Clients that send
  no Content-Type at all (scripts) still work: a browser sending a body without one is
  cross-origin, and carries an Origin.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

# Names the shipped deployments use (deploy/k8s: the Service `meshlens` in namespace
# `meshlens`; Argo's and Kayenta's templates call http://meshlens.meshlens:8080).
DEFAULT_ALLOWED_HOSTS: Final = (
    "localhost",
    "*.localhost",
    "meshlens.meshlens",
    "*.svc",
    "*.svc.cluster.local",
)
BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    message: str


def split_host(value: str) -> tuple[str, str]:
    """'Example.com:8080' -> ('example.com', '8080'); '[::1]:80' -> ('::1', '80')."""
    value = value.strip().lower()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, rest.removeprefix(":")
    host, _, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    return host.rstrip("."), port


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    """Whether a Host header's name (no port) is one a rebinding page cannot take over."""
    if not host:
        return False
    if _is_ip(host) or "." not in host:
        return True
    for pattern in allowed:
        p = pattern.strip().lower().rstrip(".")
        if p == "*":
            return True
        if p.startswith("*.") and host.endswith(p[1:]):
            return True
        if host == p:
            return True
    return False


def _json_type(ctype: str) -> bool:
    mime = ctype.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (
        mime.startswith("application/") and mime.endswith("+json")
    )


def same_origin_refusal(
    method: str, headers: Mapping[str, str], allowed_hosts: Iterable[str], has_body: bool
) -> Refusal | None:
    """None when the request may proceed; else why not. `headers`: lower-case names."""
    host_header = headers.get("host", "")
    host, _port = split_host(host_header)
    if not host_allowed(host, allowed_hosts):
        return Refusal(
            403,
            f"Host {host_header!r} is not an allowed name for this server (no --auth-token is "
            "set; add it to --api-allowed-hosts, or call by IP or localhost)",
        )
    origin = headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin.strip())
        if origin.strip().lower() == "null" or not parts.netloc:
            return Refusal(403, f"cross-origin request refused: Origin {origin!r}")
        if split_host(parts.netloc) != split_host(host_header) and not _default_port_match(
            parts.scheme, parts.netloc, host_header
        ):
            return Refusal(
                403,
                f"cross-origin request refused: Origin {origin!r} is not Host {host_header!r}",
            )
    ctype = headers.get("content-type")
    if (method in BODY_METHODS or has_body) and ctype is not None and not _json_type(ctype):
        return Refusal(
            415,
            f"Content-Type {ctype!r} refused: send application/json (no --auth-token is set, "
            "and browsers post text/plain and form bodies cross-site)",
        )
    return None


def _default_port_match(scheme: str, origin_netloc: str, host_header: str) -> bool:
    """'http://h' is the same origin as Host 'h:80' (and https as 'h:443')."""
    default = {"http": "80", "https": "443"}.get(scheme.lower(), "")
    o_host, o_port = split_host(origin_netloc)
    h_host, h_port = split_host(host_header)
    return o_host == h_host and (o_port or default) == (h_port or default)
