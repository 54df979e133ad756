"""Server-side request forgery: every refused form, with proof that nothing was reached."""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from streamproxy.fetch.resolver import CheckingResolver
from streamproxy.fetch.safety import FetchPolicy, Refused, parse_allow_rule
from streamproxy.runtime.settings import SettingsError, load_settings

from ..conftest import ServerProcess, Service, ServiceFactory
from .conftest import (
    ALLOW_SOURCES,
    SourceFactory,
    import_error,
    import_ok,
    job,
    post_import,
)
from .sources import Source

# --- the address policy, category by category ------------------------------------

REFUSED_ADDRESSES = [
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "not globally reachable"),  # CGNAT shared space
    ("100.127.255.254", "not globally reachable"),
    ("169.254.169.254", "link-local"),  # cloud metadata
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "private"),  # "this network"
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("192.0.2.1", "private"),  # documentation
    ("198.18.0.1", "private"),  # benchmarking
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fe80::1", "link-local"),
    ("fe80::1%1", "link-local"),
    ("fec0::1", "site-local"),
    ("fc00::1", "private"),  # ULA
    ("fd12:3456::1", "private"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("::ffff:127.0.0.1", "loopback (it carries 127.0.0.1)"),  # IPv4-mapped
    ("::ffff:10.0.0.1", "private (it carries 10.0.0.1)"),
    ("::ffff:169.254.169.254", "link-local"),
    ("64:ff9b::7f00:1", "loopback (it carries 127.0.0.1)"),  # NAT64
    ("64:ff9b::a9fe:a9fe", "link-local (it carries 169.254.169.254)"),
    ("64:ff9b:1::a00:1", "reserved"),  # local-use NAT64
    ("2002:7f00:1::", "loopback (6to4 of 127.0.0.1)"),
    ("2002:a00:1::1", "private (6to4 of 10.0.0.1)"),
    ("2001::1", "private"),  # Teredo
    ("2001:db8::1", "private"),  # documentation
    ("::127.0.0.1", "reserved"),  # IPv4-compatible, deprecated
    ("100::1", "reserved"),  # discard-only
]


@pytest.mark.parametrize(("address", "reason"), REFUSED_ADDRESSES)
def test_refused_address_categories(address: str, reason: str) -> None:
    refusal = FetchPolicy().address_refusal(ip_address(address))
    assert refusal is not None and refusal.startswith(reason), refusal


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "2606:4700:4700::1111",
        "2a00:1450:4001::200e",
        "::ffff:8.8.8.8",  # mapped public address: judged by what it reaches
        "64:ff9b::808:808",  # NAT64 of a public address (IPv6-only networks with DNS64)
        "2002:808:808::1",  # 6to4 of a public address
    ],
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert FetchPolicy().address_refusal(ip_address(address)) is None


def test_allow_list_opens_only_what_it_names() -> None:
    policy = FetchPolicy.from_rules(
        [parse_allow_rule("127.0.0.2"), parse_allow_rule("10.0.0.0/8"), "media.internal"]
    )
    assert policy.address_refusal(ip_address("127.0.0.2")) is None
    assert policy.address_refusal(ip_address("::ffff:127.0.0.2")) is None  # the same host
    assert policy.address_refusal(ip_address("10.200.0.1")) is None
    assert policy.address_refusal(ip_address("127.0.0.1")) == "loopback"
    assert policy.address_refusal(ip_address("192.168.0.1")) == "private"
    assert policy.host_allowed("Media.Internal.")
    assert not policy.host_allowed("other.internal")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", ip_network("127.0.0.1/32")),
        ("127.0.0.1/8", ip_network("127.0.0.0/8")),
        ("fd00::/8", ip_network("fd00::/8")),
        ("Media.Internal.", "media.internal"),
        ("bücher.example", "xn--bcher-kva.example"),
    ],
)
def test_parse_allow_rule(text: str, expected: object) -> None:
    assert parse_allow_rule(text) == expected


@pytest.mark.parametrize("text", ["", "a b", "127.1", "0x7f000001", "http://x/", "host/path"])
def test_parse_allow_rule_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="not a network or host name"):
        parse_allow_rule(text)


def test_fetch_settings_from_environment_and_flags() -> None:
    settings = load_settings(
        environ={
            "STREAMPROXY_FETCH_ALLOW": "127.0.0.2, media.internal",
            "STREAMPROXY_FETCH_TIMEOUT": "90",
            "STREAMPROXY_FETCH_PROXY": "http://proxy.internal:3128",
        }
    )
    assert settings.fetch_allow == (ip_network("127.0.0.2/32"), "media.internal")
    assert settings.fetch_timeout == 90.0
    assert settings.fetch_proxy == URL("http://proxy.internal:3128")
    with pytest.raises(SettingsError, match=r"^STREAMPROXY_FETCH_READ_TIMEOUT: "):
        load_settings(environ={"STREAMPROXY_FETCH_READ_TIMEOUT": "0"})
    with pytest.raises(SettingsError, match=r"^STREAMPROXY_FETCH_PROXY: "):
        load_settings(environ={"STREAMPROXY_FETCH_PROXY": "socks5://x:1"})


async def test_resolver_checks_every_address_it_returns() -> None:
    resolver = CheckingResolver(FetchPolicy())
    with pytest.raises(Refused, match="loopback"):
        await resolver.resolve("localhost", 80)
    with pytest.raises(Refused, match="canonical"):
        await resolver.resolve("0x7f000001", 80)
    allowing = CheckingResolver(FetchPolicy.from_rules(["localhost"]))
    assert {r["host"] for r in await allowing.resolve("localhost", 80)} <= {"127.0.0.1", "::1"}
    trusting = CheckingResolver(FetchPolicy(), trusted_host="localhost")  # the proxy
    assert await trusting.resolve("localhost", 80)


class FixedResolver(AbstractResolver):
    """Answers every name with the same addresses, as a hostile DNS server may."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.addresses
        ]

    async def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "addresses",
    [("8.8.8.8", "10.0.0.1"), ("2606:4700::1111", "::1"), ("1.1.1.1", "::ffff:169.254.169.254")],
)
async def test_one_refused_address_refuses_the_name(addresses: tuple[str, ...]) -> None:
    resolver = CheckingResolver(FetchPolicy(), inner=FixedResolver(*addresses))
    with pytest.raises(Refused, match=r"media\.example\.com \("):
        await resolver.resolve("media.example.com", 443)


async def test_public_addresses_are_returned_as_resolved() -> None:
    resolver = CheckingResolver(FetchPolicy(), inner=FixedResolver("8.8.8.8", "2606:4700::1111"))
    results = await resolver.resolve("media.example.com", 443)
    assert [r["host"] for r in results] == ["8.8.8.8", "2606:4700::1111"]


def test_check_url_refuses_before_any_lookup() -> None:
    policy = FetchPolicy()
    with pytest.raises(Refused, match="user-info"):
        policy.check_url(URL("https://user:pw@example.com/"))
    with pytest.raises(Refused, match="canonical"):
        policy.check_url(URL("http://0x7f000001/"))
    policy.check_url(URL("https://example.com/a.png"))  # a name: checked when resolved


# --- the same over HTTP, with listeners proving that nothing was reached ------------


@pytest.fixture
async def listeners(start_source: SourceFactory) -> AsyncIterator[list[Source]]:
    """Listeners on 127.0.0.1 and, where the host has IPv6, on ::1."""
    found = [await start_source("127.0.0.1")]
    if socket.has_ipv6:
        with contextlib.suppress(OSError):
            found.append(await start_source("::1"))
    for listener in found:
        listener.file("/secret", b"internal data")
    yield found
    assert sum(listener.connections for listener in found) == 0, "a refused URL got through"


def refused_urls(v4: int, v6: int | None) -> list[str]:
    """Every refused form of the issue, aimed at the listeners' ports where they can be."""
    v6 = v6 or v4
    return [
        f"http://127.0.0.1:{v4}/secret",
        f"http://localhost:{v4}/secret",
        f"http://LOCALHOST.:{v4}/secret",
        f"http://0.0.0.0:{v4}/secret",
        f"http://[::1]:{v6}/secret",
        f"http://[::]:{v6}/secret",
        "http://10.0.0.1/secret",
        "http://172.16.5.4/secret",
        "http://192.168.0.1/secret",
        "http://100.64.0.1/secret",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00::1]/secret",
        "http://[fe80::1%25lo]/secret",
        "http://224.0.0.1/secret",
        # legacy numeric forms of 127.0.0.1
        f"http://2130706433:{v4}/secret",
        f"http://0x7f000001:{v4}/secret",
        f"http://0177.0.0.1:{v4}/secret",
        f"http://0x7f.0.0.1:{v4}/secret",
        f"http://127.1:{v4}/secret",
        f"http://127.0.1:{v4}/secret",
        f"http://127.0.0.1.:{v4}/secret",
        f"http://%31%32%37.0.0.1:{v4}/secret",
        f"http://\uff11\uff12\uff17.\uff10.\uff10.\uff11:{v4}/secret",  # fullwidth digits
        # legacy forms of an allowed address are refused too
        "http://0x7f000002/secret",
        "http://2130706434/secret",
        # IPv6 forms of IPv4 loopback
        f"http://[::ffff:127.0.0.1]:{v4}/secret",
        f"http://[::ffff:7f00:1]:{v4}/secret",
        f"http://[64:ff9b::127.0.0.1]:{v4}/secret",
        f"http://[2002:7f00:1::]:{v4}/secret",
        # schemes
        "file:///etc/passwd",
        "ftp://127.0.0.2/secret",
        f"gopher://127.0.0.1:{v4}/_GET%20/secret",
        "data:text/plain,hello",
        "javascript:alert(1)",
        "//127.0.0.2/no-scheme",
        # user-info, even in front of an allowed source
        "http://user:password@127.0.0.2/secret",
        "http://user@127.0.0.2/secret",
        "http://:@127.0.0.2/secret",
        f"http://127.0.0.2@127.0.0.1:{v4}/secret",
        "http:///no-host",
    ]


def own_host_name() -> list[str]:
    """This machine's name, which resolves to a loopback or private address (or nothing)."""
    name = socket.gethostname()
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(name, 80)}
    except OSError:
        return []
    if not addresses or any(ip_address(a.split("%")[0]).is_global for a in addresses):
        return []
    return [name]


async def test_every_refused_form(importer: Service, listeners: list[Source]) -> None:
    v6 = listeners[1].port if len(listeners) > 1 else None
    names = [f"http://{name}:{listeners[0].port}/secret" for name in own_host_name()]
    for url in refused_urls(listeners[0].port, v6) + names:
        response, body = await post_import(importer, job(url))
        assert (response.status, body["error"]) == (400, "source_not_allowed"), (url, body)
        assert body["detail"]
    importer.assert_nothing_stored()


async def test_redirects_to_refused_addresses(
    importer: Service, source: Source, listeners: list[Source]
) -> None:
    port = listeners[0].port
    targets = [
        f"http://127.0.0.1:{port}/secret",
        f"http://localhost:{port}/secret",
        f"http://0x7f000001:{port}/secret",
        f"http://[::ffff:127.0.0.1]:{port}/secret",
        "http://169.254.169.254/latest/meta-data/",
        "file:///etc/passwd",
        f"http://user:pw@127.0.0.2:{source.port}/x",
    ]
    for index, target in enumerate(targets):
        url = source.redirect(f"/r{index}", target)
        detail = await import_error(importer, url, 400, "source_not_allowed")
        assert detail
    # the refusal comes at the second hop: the source was asked each time
    assert len(source.seen) == len(targets)
    importer.assert_nothing_stored()


async def test_allowed_host_name(start_service: ServiceFactory, listeners: list[Source]) -> None:
    """`--fetch-allow localhost` lets that name through, and only that name."""
    service = await start_service(fetch_allow=("localhost",))
    port = listeners[0].port
    body = await import_ok(service, f"http://localhost:{port}/secret", fileName="ok.txt")
    assert body["size"] == len(b"internal data")
    await import_error(service, f"http://127.0.0.1:{port}/secret", 400, "source_not_allowed")
    listeners[0].connections = 0  # the allowed fetch was meant to get through


async def test_outbound_proxy(
    start_service: ServiceFactory, start_source: SourceFactory, source: Source
) -> None:
    """--fetch-proxy: requests leave through it (the proxy itself may be internal)."""
    proxy = await start_source("127.0.0.1")
    proxy.file("/via-proxy.png", b"\x89PNG\r\n\x1a\nfrom the proxy")
    service = await start_service(fetch_allow=ALLOW_SOURCES, fetch_proxy=URL(proxy.origin))
    body = await import_ok(service, source.url("/via-proxy.png"))
    assert body["type"] == "image/png"
    assert [seen.target for seen in proxy.seen] == [source.url("/via-proxy.png")]
    assert source.connections == 0
    # the policy still applies to targets behind the proxy, names included
    for url in ("http://127.0.0.1:1/x", "http://localhost:1/x", "http://10.1.1.1/x"):
        await import_error(service, url, 400, "source_not_allowed")
    assert len(proxy.seen) == 1


@pytest.mark.local_only  # the S3 client honours HTTP(S)_PROXY, as AWS SDKs do
async def test_environment_proxy_is_ignored(
    start_service: ServiceFactory,
    start_source: SourceFactory,
    source: Source,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = await start_source("127.0.0.3")
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, proxy.origin)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    service = await start_service(fetch_allow=ALLOW_SOURCES)
    await import_ok(service, source.file("/direct.png", b"\x89PNG\r\n\x1a\n"))
    assert proxy.connections == 0
    assert len(source.seen) == 1


async def _import_from(server: ServerProcess, url: str) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.url + "/files/from-url", json=job(url)) as response,
    ):
        return response.status, await response.json()


async def test_a_refusal_names_the_flag_that_allows_it_and_that_flag_works(
    spawn: Callable[..., Awaitable[ServerProcess]],
    start_source: SourceFactory,
    tmp_path: Path,
) -> None:
    """The command line a user follows: the refusal's detail says which `--fetch-allow`
    lets the source through, and a server started with exactly that imports it,
    for an address (`127.0.0.1`) and for a host name (`localhost`)."""
    local = await start_source("127.0.0.1")
    by_address = local.file("/a.txt", b"by address")
    by_name = f"http://localhost:{local.port}/n.txt"
    local.file("/n.txt", b"by name")
    strict = await spawn("--storage", str(tmp_path / "strict"))
    hints = []
    for url in (by_address, by_name):
        status, body = await _import_from(strict, url)
        assert (status, body["error"]) == (400, "source_not_allowed"), body
        hints.append(re.findall(r"--fetch-allow (\S+)", body["detail"]))
    assert hints == [["127.0.0.1"], ["localhost"]]
    assert local.connections == 0
    sources = [(by_address, b"by address"), (by_name, b"by name")]
    for (value,), (url, data) in zip(hints, sources, strict=True):
        allowing = await spawn("--storage", str(tmp_path / value), "--fetch-allow", value)
        status, body = await _import_from(allowing, url)
        assert status == 200, body
        assert (tmp_path / value / body["name"]).read_bytes() == data
    # A host name allows that name only, not the addresses it resolves to.
    status, body = await _import_from(allowing, by_address)
    assert (status, body["error"]) == (400, "source_not_allowed"), body
