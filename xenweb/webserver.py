"""The web process: uvicorn serving xenweb.asgi (pages, API, websockets).

uvicorn, not daphne (which DESIGN.md names): daphne/Twisted and Django's own ASGI handler
read a whole request body (to disk) before any code sees it, so a disk-image upload was
stored twice before it reached the hypervisor. uvicorn hands the body over in pieces as it
arrives and stops reading the socket while the application has not taken the last piece
(flow control), so storage.upload_asgi streams an upload straight into libvirt with the
client slowed down to the host's pace.

`python -m xenweb.webserver [--port N] [--host H]` is what the Procfile and the live tests
run, so both serve with the same options.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

APP = "xenweb.asgi:application"


def options(host: str, port: int) -> dict[str, Any]:
    return {
        "host": host,
        "port": port,
        "http": "httptools",
        "loop": "uvloop",
        # websockets' sans-I/O protocol (its legacy server API is deprecated).
        "ws": "websockets-sansio",
        "ws_ping_interval": 20.0,
        "ws_ping_timeout": 20.0,
        # Channels' router does not speak the lifespan protocol.
        "lifespan": "off",
        # Consoles and event streams stay open: do not wait for them on shutdown.
        "timeout_graceful_shutdown": 5,
        "proxy_headers": True,
        "server_header": False,
        "log_level": os.environ.get("LOG_LEVEL", "info").lower(),
    }


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args = parser.parse_args(argv)
    uvicorn.run(APP, **options(args.host, args.port))


if __name__ == "__main__":
    main()
