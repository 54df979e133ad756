"""Where a URL import may go: the address policy against server-side request forgery.

A URL from a client makes this server open a connection from inside the
deployment's network, so by default only globally reachable unicast addresses
are allowed: loopback, private, link-local (cloud metadata at 169.254.169.254),
shared CGNAT space, multicast, reserved and unspecified addresses are refused, and
so are IPv6 addresses that carry one of those (IPv4-mapped, NAT64, 6to4). The
stdlib's `ipaddress` flags decide; the few categories it calls global
(multicast, IPv6 site-local) are checked by name. `--fetch-allow` networks and
hosts are the only exception.

Hosts written as numbers in a legacy form (`2130706433`, `0x7f000001`,
`0177.0.0.1`, `127.1`) are refused outright: `getaddrinfo` would read them as
addresses that no reader of the URL expects, whatever the allow list says.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from yarl import URL

IPAddress = IPv4Address | IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
AllowRule = IPNetwork | str  # a network, or a host name (lower case, no trailing dot)

SCHEMES = frozenset({"http", "https"})
# NAT64's well-known prefix (RFC 6052): the last 32 bits are the IPv4 address reached.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# The last DNS label is a number (WHATWG URL "ends in a number"): an IPv4 form.
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0[xX][0-9a-fA-F]*)$")
_HOST_NAME = re.compile(r"^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$")

# Why an address is refused, first match wins; is_global catches the rest (CGNAT, ...).
_REFUSALS: tuple[tuple[str, Callable[[IPAddress], bool]], ...] = (
    ("unspecified", lambda a: a.is_unspecified),
    ("loopback", lambda a: a.is_loopback),
    ("link-local", lambda a: a.is_link_local),
    ("multicast", lambda a: a.is_multicast),
    ("site-local", lambda a: isinstance(a, IPv6Address) and a.is_site_local),
    ("reserved", lambda a: a.is_reserved),
    ("private", lambda a: a.is_private),
    ("not globally reachable", lambda a: not a.is_global),
)


class Refused(Exception):
    """The URL, or an address its host resolves to, is not allowed; the text says why."""


def parse_allow_rule(text: str) -> AllowRule:
    """`--fetch-allow`: a network (`10.0.0.0/8`), an address, or a host name."""
    value = text.strip()
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        pass
    host = value.rstrip(".").lower()
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"not a network or host name: {text!r}") from None
    if not _HOST_NAME.match(host) or _ends_in_number(host):
        raise ValueError(f"not a network or host name: {text!r}")
    return host


def _ends_in_number(host: str) -> bool:
    labels = host.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()
    return bool(_NUMERIC_LABEL.match(labels[-1]))


def literal_address(host: str) -> IPAddress | None:
    """The address when the host is an IP literal, None for a name; refuses legacy forms."""
    try:
        return ipaddress.ip_address(host.replace("%25", "%"))
    except ValueError:
        pass
    if _ends_in_number(host):
        raise Refused(f"{host} is neither a host name nor a canonical IPv4 address")
    return None


def _is_localhost(host: str) -> bool:
    """RFC 6761: localhost and its subdomains are loopback, whatever a resolver says."""
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


def _carried_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv4-mapped or NAT64 address actually reaches."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None


@dataclass(frozen=True)
class FetchPolicy:
    """The allow list, and the checks every URL and every resolved address go through."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def from_rules(cls, rules: Iterable[AllowRule]) -> FetchPolicy:
        networks = tuple(rule for rule in rules if not isinstance(rule, str))
        hosts = frozenset(rule for rule in rules if isinstance(rule, str))
        return cls(networks, hosts)

    def host_allowed(self, host: str) -> bool:
        return host.rstrip(".").lower() in self.hosts

    def address_refusal(self, address: IPAddress) -> str | None:
        """None when the address may be reached, else the reason in a few words."""
        if any(address in network for network in self.networks):
            return None
        if isinstance(address, IPv6Address):
            carried = _carried_ipv4(address)
            if carried is not None:
                reason = self.address_refusal(carried)
                return reason and f"{reason} (it carries {carried})"
            if address.sixtofour is not None:
                reason = self.address_refusal(address.sixtofour)
                if reason:
                    return f"{reason} (6to4 of {address.sixtofour})"
        for reason, applies in _REFUSALS:
            if applies(address):
                return reason
        return None

    def check_address(self, host: str, address: IPAddress) -> None:
        reason = self.address_refusal(address)
        if reason:
            shown = host if host == str(address) else f"{host} ({address})"
            raise Refused(f"{shown} is a {reason} address{allow_hint(host, address)}")

    def check_url(self, url: URL) -> None:
        """Everything that can be refused before any lookup or connection."""
        if url.scheme not in SCHEMES:
            shown = url.scheme or "(none)"
            raise Refused(f"the scheme {shown!r} is not allowed; use http or https")
        if url.raw_user is not None or url.raw_password is not None:
            raise Refused("a URL with user-info (user:password@host) is not allowed")
        host = url.raw_host
        if not host:
            raise Refused("the URL has no host")
        address = literal_address(host)
        if address is not None:
            self.check_address(host, address)
        elif _is_localhost(host) and not self.host_allowed(host):
            raise Refused(f"{host} is a loopback name{allow_hint(host)}")


def allow_hint(host: str, address: IPAddress | None = None) -> str:
    """How the operator lets this through: the refusal names the flag and its value.

    A user who reads only "is a loopback address" cannot guess that a start-up
    flag exists; each value named here is one `parse_allow_rule` accepts.
    """
    values: list[str] = []
    with contextlib.suppress(ValueError):
        if isinstance(parse_allow_rule(host), str):
            values.append(host.rstrip(".").lower())
    if address is not None:
        values.append(str(address).split("%", 1)[0])
    if not values:
        return ""
    options = " or ".join(f"--fetch-allow {value}" for value in values)
    return f"; the service refuses it unless started with {options}"
