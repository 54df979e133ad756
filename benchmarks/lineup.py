"""Which servers a run starts: `--servers` names made into `Server` objects.

A server that cannot run on this machine (nginx not installed, the bench extra
missing) is reported with the reason rather than failing the run, so that the report
says what is missing.
"""

from __future__ import annotations

from pathlib import Path

from .servers import (
    FastAPIPeer,
    FloorPeer,
    Nginx,
    Server,
    Streamproxy,
    StreamproxyNoFsync,
    StreamproxyRawPut,
    StreamproxyTwoWorkers,
)


def make_servers(
    names: list[str], workdir: Path, programs: dict[str, str | None], streamproxy_args: list[str]
) -> tuple[list[Server], dict[str, str]]:
    """The servers `names` asks for, and why each of the others cannot run here."""
    servers: list[Server] = []
    unavailable: dict[str, str] = {}
    # streamproxy-raw rides on the streamproxy process: made (and started) after it.
    for name in sorted(names, key=lambda name: name == "streamproxy-raw"):
        if name == "nginx":
            program = programs.get("nginx")
            if program:
                servers.append(Nginx(workdir, program))
            else:
                unavailable[name] = "nginx is not installed (Debian package nginx-light)"
        elif name == "streamproxy":
            servers.append(Streamproxy(workdir, streamproxy_args))
        elif name == "streamproxy-nofsync":
            servers.append(StreamproxyNoFsync(workdir, streamproxy_args))
        elif name == "streamproxy-raw":
            main = next((s for s in servers if s.name == "streamproxy"), None)
            if not isinstance(main, Streamproxy):
                unavailable[name] = "rides on the streamproxy server, which is not listed"
            else:
                servers.append(StreamproxyRawPut(main))
        elif name == "floor":
            servers.append(FloorPeer(workdir))
        elif name == "streamproxy-2w":
            servers.append(StreamproxyTwoWorkers(workdir, streamproxy_args))
        elif name == "fastapi":
            try:
                import fastapi  # noqa: F401
                import uvicorn  # noqa: F401
            except ImportError:
                unavailable[name] = (
                    "FastAPI or uvicorn is not installed (pip install -e '.[bench]')"
                )
            else:
                servers.append(FastAPIPeer(workdir))
        else:
            raise ValueError(f"unknown server {name!r}")
    return servers, unavailable
