"""The resolver inside aiohttp's connector: resolve once, check every address, connect to those.

aiohttp connects to exactly the addresses its resolver returns (IP literals skip the
resolver; `FetchPolicy.check_url` has checked those already), so doing the checks
here closes the gap a check-then-fetch design leaves open: a name that resolves to
a public address for the check and to 127.0.0.1 for the connection (DNS rebinding).
"""

from __future__ import annotations

import socket
from ipaddress import ip_address

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from .safety import FetchPolicy, literal_address


class CheckingResolver(AbstractResolver):
    """Answers only with checked addresses; raises `safety.Refused` if any address is refused.

    `trusted_host` is the configured outbound proxy: the operator chose it, so it
    is exempt (it is typically on a private network).
    """

    def __init__(
        self,
        policy: FetchPolicy,
        trusted_host: str | None = None,
        inner: AbstractResolver | None = None,
    ) -> None:
        self._policy = policy
        self._trusted_host = trusted_host
        self._inner = inner or ThreadedResolver()  # getaddrinfo, honouring /etc/hosts

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._trusted_host is not None and host == self._trusted_host:
            return await self._inner.resolve(host, port, family)
        return await self.resolve_checked(host, port, family)

    async def resolve_checked(
        self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[ResolveResult]:
        """Every address of `host`, all checked; also used to vet targets behind a proxy."""
        literal_address(host)  # getaddrinfo would read 0x7f000001 as 127.0.0.1: refuse it
        results = await self._inner.resolve(host, port, family)
        if not self._policy.host_allowed(host):
            for result in results:
                self._policy.check_address(host, ip_address(result["host"]))
        return results

    async def close(self) -> None:
        await self._inner.close()
