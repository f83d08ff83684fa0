"""Run a blocking libvirt call in a worker thread and give up after a timeout.

libvirt has no connect timeout of its own: opening a connection to a host that
silently drops packets (or a daemon that accepts but never answers) can block
for minutes. The call runs in a daemon thread; if it outlives the timeout the
caller gets :class:`HostUnreachable` and whatever the call returns later is
handed to ``discard`` (e.g. to close a connection nobody will use).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar, cast

from .errors import HostUnreachable, host_label

T = TypeVar("T")


class _Attempt(Generic[T]):
    def __init__(self, fn: Callable[[], T], discard: Callable[[T], None] | None) -> None:
        self._fn = fn
        self._discard = discard
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._abandoned = False
        self.value: T | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            value = self._fn()
        except BaseException as exc:
            with self._lock:
                self.error = exc
                self._done.set()
            return
        with self._lock:
            late = self._abandoned
            if not late:
                self.value = value
                self._done.set()
        if late and self._discard is not None:
            self._discard(value)

    def wait(self, timeout: float) -> bool:
        """True if the call finished in time; otherwise mark it abandoned."""
        if self._done.wait(timeout):
            return True
        with self._lock:
            if self._done.is_set():
                return True
            self._abandoned = True
            return False


def call_with_timeout(
    fn: Callable[[], T],
    *,
    timeout: float,
    uri: str,
    what: str,
    discard: Callable[[T], None] | None = None,
    reported_timeout: float | None = None,
) -> T:
    """Return ``fn()``, re-raise its exception, or raise HostUnreachable on timeout.

    ``reported_timeout`` is the time budget named in the message, when ``timeout``
    is only what is left of it.
    """
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    attempt: _Attempt[T] = _Attempt(fn, discard)
    worker = threading.Thread(target=attempt.run, name=f"libvirt {what}", daemon=True)
    worker.start()
    if not attempt.wait(timeout):
        raise HostUnreachable(
            f"Cannot reach {host_label(uri)}: {what} timed out after "
            f"{reported_timeout or timeout:g} s "
            "(host down or firewalled, or libvirtd not answering?)",
            uri=uri,
        )
    if attempt.error is not None:
        raise attempt.error
    return cast(T, attempt.value)
