"""Commands on the P2V source over the system ``ssh`` client.

P2V has an SSH identity and a trust store of its own (``P2V_IDENTITY``: ``ssh/id_ed25519_p2v``,
``P2V_TRUST``: ``ssh/known_hosts_p2v``); the dom0 management key and the dom0 pins are
never used here, so nothing an operator does through P2V logs in to a dom0 or changes the
key a dom0 is trusted with. ssh connects only to the address ``address.checked`` resolved
and checked (``Source.connect_to``, never the name), ignores every ssh_config file, agent
and other identity.

The host key must be the one the user confirmed (pinned in the P2V known_hosts); ssh then
runs with StrictHostKeyChecking=yes, so a key that changes later aborts every following
connection too. A key the appliance trusts for an enrolled host is refused outright.

Authentication is the appliance's P2V key (BatchMode: ssh never prompts), or a password given
for one request or job. A password is never in ssh's arguments or environment: for each
ssh run it is written once into a FIFO in a private temporary folder (mode 0700; the
data lives in the kernel's pipe buffer, never on disk), and ssh, told to use an askpass
program (``SSH_ASKPASS_REQUIRE=force``), asks ``askpass.py`` for it, which finds the FIFO
by its path and takes the password out without blocking. (An inherited pipe is not
possible: ssh closes every descriptor above stderr when it starts.) Public-key
authentication is then off and only one password prompt is allowed, so a wrong password
fails at once, with its own message, and is never tried again by the copy's reconnects.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shlex
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hosts.enrolled import is_enrolled_host_key
from hosts.virt.ssh import SshLogin, ssh_argv
from xenweb.appliance.sshkeys import (
    P2V_IDENTITY,
    P2V_TRUST,
    HostKeyError,
    HostKeyMismatch,
    SshIdentity,
    TrustStore,
    scan_host_key,
)

# The one identity and trust store P2V has (see the module's docstring).
IDENTITY: SshIdentity = P2V_IDENTITY
TRUST: TrustStore = P2V_TRUST

ASKPASS = Path(__file__).with_name("askpass.py")
ASKPASS_FIFO_VARIABLE = "XENWEB_ASKPASS_FIFO"  # askpass.FIFO_VARIABLE
PASSWORD_MAX_BYTES = 1000  # ssh reads at most 1023 bytes from an askpass program


class P2VError(RuntimeError):
    """A P2V step failed; the message says what and why, in the operator's words."""


class HostKeyRefused(P2VError):
    """The source's host key is not the confirmed one: never retried."""


class ConnectionLost(P2VError):
    """The SSH session ended early: worth retrying."""


class ManagedHostRefused(P2VError):
    """The source is (or offers the host key of) an enrolled host: never connected to."""


class LoginRefused(P2VError):
    """The source refused the key or the password: never retried (a retry would only
    count as one more failed login on the source)."""


class Secret:
    """A password held in memory only: it never shows in a repr, a log line, a traceback
    or a pickle; ``reveal()`` is the one way to its value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret is never pickled")


def check_password(password: str) -> str | None:
    """Why ``password`` cannot be sent through ssh, or None when it can."""
    if "\n" in password or "\r" in password or "\0" in password:
        return "A password with a line break or a NUL character cannot be used."
    if len(password.encode()) > PASSWORD_MAX_BYTES:
        return f"A password longer than {PASSWORD_MAX_BYTES} bytes cannot be used."
    return None


@dataclass(frozen=True)
class Source:
    address: str  # as the user gave it (shown in messages and kept in the job)
    port: int = 22
    username: str = "root"
    password: Secret | None = field(default=None, repr=False, compare=False)
    connect_to: str = ""  # the IP address address.checked() resolved and checked

    @property
    def label(self) -> str:
        return f"{self.username}@{self.address}:{self.port}"

    @property
    def ip(self) -> str:
        """The checked address to connect to; nothing connects to a source without one."""
        if not self.connect_to:
            raise P2VError(f"The address of {self.address} was not checked: not connecting.")
        return self.connect_to


def confirm_host_key(source: Source, fingerprint: str | None) -> str:
    """The source's host key fingerprint, checked against ``fingerprint`` and then pinned
    in the P2V known_hosts.

    Without ``fingerprint`` (the inventory preview) the offered key is pinned on first
    contact and returned for the user to confirm; a key different from an earlier pin is
    refused, and so is a key the appliance trusts for an enrolled host.
    """
    try:
        offered = scan_host_key(source.ip, source.port)
        if is_enrolled_host_key(offered[1]):
            raise ManagedHostRefused(
                f"P2V refuses {source.address}: it offers the SSH host key of an enrolled "
                f"host ({offered[1]}), and P2V never copies a managed host.")
        return TRUST.verify(source.ip, source.port, fingerprint, offered_key=offered)
    except HostKeyMismatch as exc:
        raise HostKeyRefused(str(exc)) from exc
    except HostKeyError as exc:
        raise P2VError(str(exc)) from exc


def _login(source: Source) -> SshLogin:
    """P2V's own identity (none for a password login) and trust store, nothing else."""
    key = str(IDENTITY.private_key()) if source.password is None else None
    return SshLogin(known_hosts=str(TRUST.path()), key=key)


def _auth_options(source: Source) -> list[str]:
    if source.password is None:
        return ["-o", "BatchMode=yes"]
    return ["-o", "BatchMode=no",  # BatchMode=yes would not ask askpass either
            "-o", "PubkeyAuthentication=no",
            "-o", "PreferredAuthentications=password",
            "-o", "NumberOfPasswordPrompts=1"]


def ssh_args(source: Source, command: list[str]) -> list[str]:
    """The ``ssh`` argument list running ``command`` (quoted for the remote shell)."""
    return ssh_argv(
        _login(source), source.ip, user=source.username, port=source.port,
        options=["-T", "-F", "/dev/null", *_auth_options(source),
                 "-o", "IdentityAgent=none",
                 "-o", "UpdateHostKeys=no",
                 "-o", "CheckHostIP=no",
                 "-o", "ConnectTimeout=15",
                 "-o", "ServerAliveInterval=5",
                 "-o", "ServerAliveCountMax=3",
                 "-o", "LogLevel=ERROR"],
        command=[shlex.join(command)],
    )


@contextlib.contextmanager
def login_env(source: Source) -> Iterator[dict[str, str] | None]:
    """The environment ssh runs with: None (this process's) for a key login; for a
    password login, the askpass settings, with the password waiting in a FIFO until the
    block ends."""
    if source.password is None:
        yield None
        return
    if not os.access(ASKPASS, os.X_OK):
        raise P2VError(f"The password helper {ASKPASS} is not executable: reinstall the "
                       "appliance, or use the appliance's P2V key.")
    folder = tempfile.mkdtemp(prefix="xenweb-askpass-")  # mode 0700
    fifo = os.path.join(folder, "password")
    fd = -1
    try:
        os.mkfifo(fifo, 0o600)
        # Read-write: opening never blocks, and the FIFO keeps what was written until
        # askpass takes it (or until it is closed: the kernel then drops the bytes).
        fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        os.write(fd, source.password.reveal().encode() + b"\n")  # < PIPE_BUF: atomic
        yield {**os.environ, "SSH_ASKPASS": str(ASKPASS), "SSH_ASKPASS_REQUIRE": "force",
               ASKPASS_FIFO_VARIABLE: fifo}
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(fifo)  # first: a late askpass finds nothing rather than waiting
        if fd >= 0:
            os.close(fd)
        os.rmdir(folder)


def _refusal(source: Source, stderr: str, text: str) -> LoginRefused:
    """The message for ``Permission denied (method,…)``: key or password, and why."""
    offered = stderr.rsplit("Permission denied", 1)[-1].partition("(")[2].partition(")")[0]
    methods = [method.strip() for method in offered.split(",") if method.strip()]
    if source.password is None:
        return LoginRefused(f"{source.label} refused the appliance's P2V key: add the P2V key "
                            "shown on the P2V page (or GET /api/v1/p2v/public-key/) to the "
                            f"user's authorized_keys ({text}).")
    if "password" in methods:
        return LoginRefused(f"The source refused the password for {source.label}.")
    return LoginRefused(f"{source.label} does not accept password logins (it offers: "
                        f"{', '.join(methods) or 'nothing'}): add the appliance's P2V key to the "
                        "user's authorized_keys instead.")


def explain(source: Source, returncode: int, stderr: str) -> P2VError:
    """The ssh client's failure as a P2VError of the right kind."""
    text = " ".join(stderr.strip().splitlines()[-3:]) or f"exit status {returncode}"
    if "host key" in stderr.lower() and ("verification failed" in stderr.lower()
                                         or "changed" in stderr.lower()):
        return HostKeyRefused(f"The host key of {source.address}:{source.port} is not the "
                              f"confirmed one; the connection was refused ({text}).")
    if "Permission denied" in stderr:
        return _refusal(source, stderr, text)
    if returncode == 255:
        return ConnectionLost(f"SSH connection to {source.label} failed: {text}")
    return P2VError(f"The command on {source.label} failed: {text}")


OUTPUT_LIMIT = 16 * 1024 * 1024  # what run() keeps of a command's stdout
STDERR_KEPT = 64 * 1024  # the end of stderr, for the message


class OutputTooLarge(P2VError):
    """The source sent more output than the command can give: a hostile or broken source."""


def _collect(proc: subprocess.Popen[bytes], stdin: bytes, timeout: float,
             limit: int) -> tuple[bytes, bytes, bool]:
    """``proc``'s stdout (at most ``limit`` bytes), the end of its stderr, and whether
    stdout went past ``limit`` (then it is not read further)."""
    if proc.stdin is None or proc.stdout is None or proc.stderr is None:
        raise P2VError("ssh was started without pipes.")
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.write(stdin)  # the inventory script: far below a pipe's buffer
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.close()
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ, out)
        selector.register(proc.stderr, selectors.EVENT_READ, err)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(proc.args, timeout)
            for key, _events in selector.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                key.data.extend(chunk)
                if key.data is out and len(out) > limit:
                    return bytes(out[:limit]), bytes(err[-STDERR_KEPT:]), True
                if key.data is err and len(err) > 2 * STDERR_KEPT:
                    del err[:-STDERR_KEPT]
    proc.wait(timeout=max(deadline - time.monotonic(), 1))
    return bytes(out), bytes(err[-STDERR_KEPT:]), False


def run(source: Source, command: list[str], *, stdin: bytes = b"",
        timeout: float = 120.0, limit: int = OUTPUT_LIMIT) -> bytes:
    """Run ``command`` on the source; its stdout, or a P2VError that says why not (also
    when the source sends more than ``limit`` bytes: nothing larger is kept in memory)."""
    with session(source, command) as proc:
        try:
            stdout, stderr, over = _collect(proc, stdin, timeout, limit)
        except subprocess.TimeoutExpired as exc:
            raise ConnectionLost(f"{source.label} did not answer within {timeout:.0f} s.") \
                from exc
    if over:
        raise OutputTooLarge(f"{source.label} sent more than {limit // (1024 * 1024)} MiB "
                             "of output where a Linux system sends a few KiB: the answer "
                             "was not read.")
    if proc.returncode != 0:
        raise explain(source, proc.returncode, stderr.decode(errors="replace"))
    return stdout


@contextlib.contextmanager
def session(source: Source, command: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` running on the source with pipes (the caller writes stdin, reads
    stdout); when the block ends, ssh is stopped if it still runs and its pipes closed."""
    with login_env(source) as env:
        proc = subprocess.Popen(ssh_args(source, command), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
