"""Host and Origin: which values this server answers to, parsed and compared exactly.

The allowed lists are loopback, the bind address and the configured extras
(`GGUF_MCP_ALLOWED_HOSTS`, `GGUF_MCP_ALLOWED_ORIGINS`). Values are parsed (name or bracketed
IPv6 address, port) and compared lowercased, never as prefixes: `127.0.0.1:80@evil.example` is
not `127.0.0.1`. This is the only Host and Origin check: the SDK's own (which matches prefixes,
case-sensitively) is switched off (`SDK_HOST_CHECK_OFF`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import Scope

from gguf_mcp.config import Settings

SDK_HOST_CHECK_OFF = TransportSecuritySettings(enable_dns_rebinding_protection=False)
"""What the SDK's transport gets: its DNS-rebinding check off, so `HostRules` is the one owner."""

_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_WILDCARD_BINDS = ("0.0.0.0", "::")  # noqa: S104 - names to recognise, not to bind
_HOST = re.compile(r"(?:\[(?P<v6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9.-]+))(?::(?P<port>[0-9]{1,5}|\*))?")
_ORIGIN = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>.+)")
_ANY_PORT = "*"

HostKey = tuple[str, str | None]
"""A host name (lowercase; IPv6 in brackets) and its port as written: digits, `*` (patterns only) or None."""


def _host_key(value: str) -> HostKey | None:
    """`value` parsed as a Host header (or a pattern with port `*`), or None when it is not one."""
    match = _HOST.fullmatch(value.lower())
    if match is None or (match["v6"] is not None and _ip_address(match["v6"]) is None):
        return None
    port = match["port"]
    if port is not None and port != _ANY_PORT and not 0 < int(port) <= 65535:
        return None
    return (f"[{match['v6']}]" if match["v6"] is not None else match["name"]), port


def _origin_key(value: str) -> tuple[str, HostKey] | None:
    """`value` parsed as an Origin (`scheme://host[:port]`, nothing else), or None when it is not one."""
    match = _ORIGIN.fullmatch(value.lower())
    host = _host_key(match["host"]) if match is not None else None
    return None if match is None or host is None else (match["scheme"], host)


def _allowed(key: HostKey, patterns: set[HostKey]) -> bool:
    """The exact host and port, or `name:*` for any explicit port of `name`."""
    name, port = key
    return port != _ANY_PORT and (key in patterns or (port is not None and (name, _ANY_PORT) in patterns))


def _local_names(settings: Settings) -> list[str]:
    """Loopback and the bind address (unless a wildcard), as Host headers write them."""
    names = list(_LOOPBACK_NAMES)
    bind = settings.host if settings.host != "::1" else "[::1]"
    if bind not in names and bind not in _WILDCARD_BINDS:
        names.append(f"[{bind}]" if ":" in bind and not bind.startswith("[") else bind)
    return names


def _with_any_port(keys: Iterable[HostKey]) -> set[HostKey]:
    """`keys`, each written without a port also matching any port (`name:*`)."""
    found = set(keys)
    return found | {(name, _ANY_PORT) for name, port in found if port is None}


class HostRules:
    """The Host and Origin values to accept: loopback, the bind address, and the configured extras.

    A local name or an extra host without a port matches any port (`mcp.example.com` also allows
    `mcp.example.com:8443`); configured origins match exactly, as browsers send them.
    """

    def __init__(self, settings: Settings) -> None:
        local = _with_any_port((name, None) for name in _local_names(settings))
        self._hosts = local | _with_any_port(filter(None, map(_host_key, settings.allowed_hosts)))
        self._origins: dict[str, set[HostKey]] = {"http": local}
        for scheme, host in filter(None, (_origin_key(o.rstrip("/")) for o in settings.allowed_origins)):
            self._origins.setdefault(scheme, set()).add(host)

    def host(self, value: str) -> bool:
        key = _host_key(value)
        return key is not None and _allowed(key, self._hosts)

    def origin(self, value: str) -> bool:
        key = _origin_key(value)
        return key is not None and _allowed(key[1], self._origins.get(key[0], set()))


def _ip_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_ip_literal(host_header: str) -> bool:
    key = _host_key(host_header)
    return key is not None and key[1] != _ANY_PORT and _ip_address(key[0].strip("[]")) is not None


def arrived_on_loopback(scope: Scope) -> bool:
    """Whether the connection reached a loopback address (or a Unix socket) of this machine."""
    server = scope.get("server")
    if not server or server[1] is None:
        return True
    address = _ip_address(server[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address is not None and address.is_loopback
