"""Readers run as subprocesses: an argument list, `prlimit` bounds (address space, CPU
seconds), a wall-clock timeout and a cap on what they may print; and a budget, the seconds
all the readers of one inspection may take together."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass

from storage.qemu_img import limited

READER_ADDRESS_SPACE = 512 * 1024**2
READER_CPU_SECONDS = 20
READER_TIMEOUT = 30.0
INSPECTION_READER_SECONDS = 120.0
MAX_STDERR = 64 * 1024


class ReaderFailed(Exception):
    """The reader was stopped by a bound or could not start; `str()` says which."""


class ReaderStopped(ReaderFailed):
    """A bound stopped the reader (CPU time, memory, wall clock, the inspection's budget):
    what it read was built to make it run on, or is damaged beyond reading."""


@dataclass(frozen=True)
class Output:
    returncode: int
    stdout: bytes
    stderr: str
    truncated: bool  # stdout reached the cap and the reader was stopped


def run_bounded(argv: list[str], *, max_output: int, timeout: float | None = None,
                cpu_seconds: int | None = None, address_space: int | None = None,
                env: dict[str, str] | None = None) -> Output:
    """Run `argv` under the bounds (this module's READER_* unless given); stdout beyond
    `max_output` bytes stops it (truncated). ReaderStopped when a bound stopped it."""
    timeout = READER_TIMEOUT if timeout is None else timeout
    cpu_seconds = cpu_seconds or READER_CPU_SECONDS
    address_space = address_space or READER_ADDRESS_SPACE
    try:
        process = subprocess.Popen(
            limited(argv, cpu_seconds=cpu_seconds, address_space=address_space),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, env=env)
    except OSError as exc:
        raise ReaderFailed(f"{argv[0]} could not be started: {exc.strerror}") from exc
    if process.stdout is None or process.stderr is None:  # pragma: no cover
        raise ReaderFailed(f"{argv[0]} has no output pipes.")
    out, err = bytearray(), bytearray()
    truncated = False
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ, out)
        selector.register(process.stderr, selectors.EVENT_READ, err)
        try:
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    _kill(process)
                    raise ReaderStopped(f"{argv[0]} took longer than {timeout:g} s")
                for key, _ in selector.select(remaining):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        selector.unregister(key.fileobj)
                        continue
                    sink: bytearray = key.data
                    sink += chunk
                    if sink is out and len(out) > max_output:
                        truncated = True
                        del out[max_output:]
                        _kill(process)
                        selector.unregister(process.stdout)
                    elif sink is err and len(err) > MAX_STDERR:
                        del err[MAX_STDERR:]
        except BaseException:
            _kill(process)
            raise
        finally:
            process.stdout.close()
            process.stderr.close()
    returncode = process.wait()
    if not truncated and returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        raise ReaderStopped(f"{argv[0]} hit its CPU time limit of {cpu_seconds} s")
    if not truncated and returncode in (-signal.SIGSEGV, -signal.SIGABRT, -signal.SIGBUS):
        raise ReaderStopped(f"{argv[0]} crashed or hit its memory limit of "
                            f"{address_space // 1024**2} MiB")
    return Output(returncode, bytes(out), err.decode(errors="replace"), truncated)


class Budget:
    """The wall-clock seconds all the readers of one inspection may take together
    (INSPECTION_READER_SECONDS): a file system on which every lookup stays just under a
    reader's own bounds would otherwise hold the inspection for as many times those bounds
    as it makes lookups."""

    def __init__(self, seconds: float | None = None) -> None:
        self.seconds = INSPECTION_READER_SECONDS if seconds is None else seconds
        self.used = 0.0

    def run(self, argv: list[str], *, max_output: int,
            env: dict[str, str] | None = None) -> Output:
        """`run_bounded` with what is left of the budget as its timeout (at most
        READER_TIMEOUT); ReaderStopped when the budget is spent."""
        left = self.seconds - self.used
        if left <= 0:
            raise ReaderStopped(self._spent())
        started = time.monotonic()
        try:
            return run_bounded(argv, max_output=max_output, env=env,
                               timeout=min(READER_TIMEOUT, left))
        except ReaderStopped as exc:
            if time.monotonic() - started >= left:
                raise ReaderStopped(self._spent()) from exc
            raise
        finally:
            self.used += time.monotonic() - started

    def _spent(self) -> str:
        return f"the readers took longer than {self.seconds:g} s in all"


def _kill(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def run_to_file(argv: list[str], out_path: str, *, max_bytes: int,
                timeout: float = READER_TIMEOUT, cpu_seconds: int = READER_CPU_SECONDS,
                address_space: int = READER_ADDRESS_SPACE) -> int:
    """Run `argv` with its stdout into `out_path`, at most `max_bytes` (prlimit --fsize);
    the return code (SIGXFSZ when the cap was hit)."""
    bounded = ["prlimit", f"--cpu={cpu_seconds}", f"--as={address_space}",
               f"--fsize={max_bytes}", "--", *argv]
    try:
        with open(out_path, "wb") as out:
            done = subprocess.run(bounded, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.DEVNULL, timeout=timeout,
                                  start_new_session=True, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ReaderStopped(f"{argv[0]} took longer than {timeout:g} s") from exc
    except OSError as exc:
        raise ReaderFailed(f"{argv[0]} could not be started: {exc.strerror}") from exc
    return done.returncode
