#!/usr/bin/python3 -I
"""SSH_ASKPASS helper for P2V password logins (see conversions/p2v/ssh.py).

``ssh`` runs it with its prompt as the only argument and reads the answer from its
stdout. The password waits in a FIFO whose path is in ``XENWEB_ASKPASS_FIFO``: the
appliance wrote it there, once, before it started this ssh, and keeps the FIFO open until
ssh ends. It is read without blocking, so a FIFO already emptied gives no answer instead
of a hang, and it is given only for a password prompt. The password is never in this
program's arguments or environment, nor in ssh's.

Standalone on purpose (``python3 -I``: no site packages, no PYTHON* variables, no
project imports).
"""

from __future__ import annotations

import os
import stat
import sys

FIFO_VARIABLE = "XENWEB_ASKPASS_FIFO"
MAX_BYTES = 4096  # one atomic pipe write (PIPE_BUF): the password and its newline


def read_password(path: str) -> bytes | None:
    """The line waiting in the FIFO at ``path``, or None (no FIFO, empty, not a line)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, MAX_BYTES)
    except OSError:  # BlockingIOError: nothing waits there (already taken)
        return None
    finally:
        os.close(fd)
    return data if data.endswith(b"\n") and data.count(b"\n") == 1 else None


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def main(argv: list[str]) -> int:
    prompt = argv[1] if len(argv) > 1 else ""
    path = os.environ.get(FIFO_VARIABLE, "")
    if not path or "password" not in prompt.lower():
        return 1
    password = read_password(path)
    if password is None:
        return 1
    write_all(sys.stdout.fileno(), password)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
