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
import ctypes
import os
from typing import Any

APP = "xenweb.asgi:application"

# mallopt() parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def tune_malloc() -> None:
    """Keep freed memory for reuse instead of giving it back to the kernel at once.

    Volume transfers allocate and free pieces of 64 KiB to 4 MiB all the time (socket
    reads, stream packets). glibc serves such sizes with fresh mmap()s or trims them off
    the heap when freed, so every piece costs page faults and zeroing by the kernel: that
    tripled the CPU time uvicorn needs to receive a body (measured: 0.9 s instead of 0.3 s
    per 512 MiB) and made it the bottleneck of uploads. Up to 32 MiB allocations now come
    from the heap, and up to 128 MiB of free heap is kept.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    libc.mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)
    libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024 * 1024)


def options(host: str, port: int) -> dict[str, Any]:
    return {
        "host": host,
        "port": port,
        "http": "xenweb.http_protocol:PieceBodyProtocol",  # httptools, fewer copies
        "loop": "uvloop",
        # websockets' sans-I/O protocol (its legacy server API is deprecated).
        "ws": "websockets-sansio",
        "ws_ping_interval": 20.0,
        "ws_ping_timeout": 20.0,
        # Channels' router does not speak the lifespan protocol.
        "lifespan": "off",
        # Consoles and event streams stay open: do not wait for them on shutdown.
        "timeout_graceful_shutdown": 5,
        # X-Forwarded-* are handled by xenweb.proxy (inside the application, for HTTP and
        # websockets alike), from FORWARDED_ALLOW_IPS only: uvicorn's own handling would
        # believe them from every local client.
        "proxy_headers": False,
        "server_header": False,
        "log_level": os.environ.get("LOG_LEVEL", "info").lower(),
    }


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args = parser.parse_args(argv)
    tune_malloc()
    uvicorn.run(APP, **options(args.host, args.port))


if __name__ == "__main__":
    main()
