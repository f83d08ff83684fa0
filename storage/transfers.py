"""Streamed download of volume content as a Job with byte progress, and what uploads
(storage.uploads) share with it.

The request handler holds the bytes, so the job runs in the request itself (not on a
worker) but is an ordinary Job row: progress, rate and ETA reach ``/ws/jobs/<id>/`` and
``/ws/events/`` like any other job's. Bytes flow in chunks between the HTTP body and the
volume (its file or a libvirt stream: storage.volume_io); neither side is ever held whole
in memory or copied to disk here.
"""

from __future__ import annotations

import asyncio
import collections
import os
import socket
import stat
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from django.db import close_old_connections

from hosts.virt import VirtError
from hosts.virt import volumes as virt
from storage import access, volume_io
from storage.errors import StorageError
from storage.models import Volume
from xenweb.audit.services import record
from xenweb.jobs.errors import JobCancelled, JobError
from xenweb.jobs.models import JobState
from xenweb.jobs.progress import ProgressReporter
from xenweb.jobs.runner import Heartbeat, claim, finish
from xenweb.jobs.services import start_inline_job

CHUNK = 1024 * 1024
# What a download hands the web server at once: the stream's packets (256 KiB) gathered,
# so that the event loop is woken and a response message sent once per block, not per
# packet. At most QUEUED blocks wait in memory per download.
BLOCK = 2 * 1024 * 1024
QUEUED = 4
WORKER = f"{socket.gethostname()}/web"


def content_size(volume: Volume) -> int:
    """How many bytes a download of the volume returns (its file's size on the host)."""
    pool = volume.pool
    try:
        return virt.volume_details(pool.host.virt_target, volume.path).physical
    except VirtError as exc:
        raise StorageError(str(exc)) from exc


def reachable_path(volume: Volume) -> str | None:
    """The volume's file, when this machine can read it (storage.access.holds_file); a symlink,
    or a file resolving out of its pool's directory, is refused (StorageError)."""
    if not (volume.path and access.holds_file(volume.pool)):
        return None
    access.check_not_link(volume, "read")
    try:
        regular = stat.S_ISREG(os.lstat(volume.path).st_mode)
    except OSError:
        return None
    return volume.path if regular and os.access(volume.path, os.R_OK) else None


# -- download ---------------------------------------------------------------------------


class ByteRangeError(StorageError):
    def __init__(self, size: int) -> None:
        super().__init__(f"Range not satisfiable (the volume has {size} bytes).")
        self.size = size


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single `bytes=` range, None for the whole content."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first_s, _, last_s = header[6:].strip().partition("-")
    try:
        if first_s == "":
            suffix = int(last_s)
            if suffix <= 0:
                raise ByteRangeError(size)
            return max(size - suffix, 0), size - 1
        first = int(first_s)
        last = int(last_s) if last_s else size - 1
    except ValueError:
        return None
    if first >= size or last < first:
        raise ByteRangeError(size)
    return first, min(last, size - 1)


_END = object()


class Download:
    """A volume's bytes for a streaming response; the job follows the bytes sent.

    The volume is opened (and the job claimed) before the response starts, so a
    host that cannot send answers an error instead of a truncated body. A producer
    thread then reads the stream into a small bounded queue (a slow client slows the
    host down; no more than a few chunks wait in memory) which the response drains,
    synchronously (`chunks`, WSGI) or asynchronously (`achunks`, ASGI).
    """

    def __init__(self, volume: Volume, *, first: int, length: int, user: Any,
                 request: Any) -> None:
        access.check_pool_use(volume.pool, user, "download")
        access.check_not_link(volume, "download")
        self.volume = volume
        self.first = first
        self.length = length
        job = start_inline_job("volume.download", volume, owner=user, request=request,
                               total=length, title=f"Download {volume.name}",
                               params={"offset": first, "bytes": length})
        claimed = claim(job.pk, task_id=job.celery_task_id, worker=WORKER)
        if claimed is None:
            raise StorageError(f"Download job #{job.pk} could not start.")
        self.job = claimed
        pool = volume.pool
        try:
            self._stream = volume_io.open_reader(pool.host, volume.path, offset=first,
                                                 length=length, chunk=CHUNK, file_chunk=BLOCK)
        except VirtError as exc:
            finish(self.job, JobState.FAILED, error=str(exc), message="Failed")
            record("volume.download", user=user, request=request, target=volume,
                   result="failed", message=str(exc))
            raise StorageError(str(exc)) from exc
        # Producer thread -> event loop: blocks in a deque, QUEUED places at most; the
        # loop is woken by call_soon_threadsafe (no executor thread per block).
        self._blocks: collections.deque[Any] = collections.deque()
        self._space = threading.Semaphore(QUEUED)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrived: asyncio.Event | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, daemon=True,
                                        name=f"job-{self.job.pk}-download")
        self._started = False

    def _put(self, item: Any) -> bool:
        """Hand a block (or _END, which always fits) to the response; False when the
        response is gone."""
        if item is not _END:
            while not self._space.acquire(timeout=0.5):
                if self._stop.is_set():
                    return False
        loop, arrived = self._loop, self._arrived
        if loop is None or arrived is None:  # only achunks starts this thread
            return False
        self._blocks.append(item)
        try:
            loop.call_soon_threadsafe(arrived.set)
        except RuntimeError:  # the event loop is closed: nobody reads any more
            self._stop.set()
            return False
        return True

    def _pump(self) -> Iterator[bytes]:
        """The bytes, while the job row follows them (progress, outcome, audit)."""
        job = self.job
        heartbeat = Heartbeat(job.pk)
        heartbeat.start()
        reporter = ProgressReporter(job)
        sent = 0
        try:
            reporter.update(0, total=self.length, message=f"Sending {self.volume.name}",
                            force=True)
            for chunk in self._stream:
                yield chunk
                sent += len(chunk)
                reporter.update(sent, message=f"Sending {self.volume.name}")
            if sent != self.length:
                raise JobError(f"The host sent {sent} of {self.length} bytes.")
            finish(job, JobState.SUCCEEDED, result={"bytes": sent}, progress=1.0, done=sent,
                   eta_seconds=0, message="Done", rate=reporter.job.rate)
            record("volume.download", user=job.owner, target=self.volume, bytes=sent,
                   offset=self.first)
        except (JobCancelled, GeneratorExit):
            message = "The client went away" if self._stop.is_set() else "Cancelled"
            finish(job, JobState.CANCELLED, message=message, done=sent)
        except (VirtError, JobError) as exc:
            finish(job, JobState.FAILED, error=str(exc), message="Failed")
        except Exception as exc:  # a job must never be left running
            finish(job, JobState.FAILED, error=f"Internal error: {exc}", message="Failed")
        finally:
            self._stream.abort()
            heartbeat.stop()

    def _produce(self) -> None:
        """The producer thread of `achunks`: the stream's packets, gathered in blocks."""
        pump = self._pump()
        parts: list[bytes] = []
        size = 0
        try:
            for chunk in pump:
                parts.append(chunk)
                size += len(chunk)
                if size < BLOCK:
                    continue
                if not self._put(parts[0] if len(parts) == 1 else b"".join(parts)):
                    self._stop.set()
                    pump.close()
                    return
                parts, size = [], 0
            if parts:
                self._put(b"".join(parts))
        finally:
            self._put(_END)
            close_old_connections()

    def _start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if not self._started:  # the response was never sent
            self._stream.abort()
            finish(self.job, JobState.CANCELLED, message="Not sent")

    def chunks(self) -> Iterator[bytes]:
        """For a synchronous server: the bytes straight from the host, in this thread."""
        self._started = True
        pump = self._pump()
        try:
            yield from pump
        finally:
            self._stop.set()
            pump.close()

    async def achunks(self) -> AsyncIterator[bytes]:
        self._loop = asyncio.get_running_loop()
        self._arrived = asyncio.Event()
        self._start()
        try:
            while True:
                if not self._blocks:
                    self._arrived.clear()
                    if not self._blocks:
                        await self._arrived.wait()
                    continue
                item = self._blocks.popleft()
                if item is _END:
                    break
                self._space.release()
                yield item
        finally:
            self.close()
