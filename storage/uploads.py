"""Replacing a volume's content with uploaded bytes, as a job with byte progress.

The bytes arrive as an iterable of chunks: the pieces of a streamed request body as the
web server receives them (xenweb.streamed_body), or reads of a request's body file (the
test client, a WSGI server). Each chunk goes straight into the volume: its file, where
this machine holds it, or a libvirt upload stream (storage.volume_io). Nothing is kept but
the image's first 2 MiB (for the format check: storage.images).

The job runs in the thread that feeds it, not on a worker, but it is an ordinary Job row:
progress, rate and ETA reach ``/ws/jobs/<id>/`` and ``/ws/events/`` like any other job's,
and ``POST /api/v1/jobs/<id>/cancel/`` stops it.

What the volume holds afterwards is never a partial image: a complete, accepted image; or,
when the image was refused, nothing (the volume is deleted, see storage.images); or, when
the transfer broke off (client gone, cancelled, host error), an empty volume of the size
it had before. From the first byte until the image was checked as a whole the volume is
marked WRITING (storage.content): nothing attaches, clones or starts it, and if this
process dies mid-upload the job reaper has it emptied.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from hosts.virt import VirtError
from hosts.virt import volumes as virt
from storage import access, content, volume_io
from storage.errors import ImageRefused, StorageError
from storage.images import (
    HEADER_BYTES,
    ImageFacts,
    check_file,
    check_libvirt_report,
    detect_format,
)
from storage.models import Volume
from storage.services import _store_volume, check_idle, check_not_save_image, resync_pool
from storage.transfers import WORKER, reachable_path
from xenweb.audit.services import record
from xenweb.jobs.errors import JobCancelled, JobError
from xenweb.jobs.models import Job
from xenweb.jobs.progress import ProgressReporter
from xenweb.jobs.runner import run_job
from xenweb.jobs.services import start_inline_job

# What one read of the body asks for: one libvirt stream send (hosts.virt.volumes).
READ = virt.SEND_MAX


class UploadBrokenOff(JobError):
    """The body ended before Content-Length bytes came (the client went away)."""


@dataclass
class UploadOutcome:
    job: Job
    refused: bool = False


def start_upload(volume: Volume, length: int, *, user: Any = None,
                 request: Any = None) -> Job:
    """The checks before any byte is read, then the (queued) job; StorageError if refused."""
    access.check_pool_use(volume.pool, user, "upload into")
    check_idle(volume, "overwrite")
    check_not_save_image(volume, "overwritten")
    access.check_not_link(volume, "write")
    pool = volume.pool
    available = pool.available + volume.allocation
    if pool.available and length > available:
        raise StorageError(f"Pool '{pool.name}' has {available} bytes free for this volume; "
                           f"the upload is {length} bytes.")
    return start_inline_job("volume.upload", volume, owner=user, request=request, total=length,
                            title=f"Upload to {volume.name}", params={"bytes": length})


def body_chunks(body: IO[bytes], length: int) -> Iterator[bytes]:
    """`length` bytes of a file-like body, in the pieces it gives (up to READ bytes each;
    a streamed request body's pieces as the web server received them). Fewer bytes when
    the body ends early; UploadBrokenOff when the connection broke off."""
    streamed = getattr(body, "streamed_body", None)
    left = length
    while left > 0:
        try:
            chunk = streamed.read_piece() if streamed else body.read(min(READ, left))
        except OSError as exc:  # the client went away (Django: UnreadablePostError)
            raise UploadBrokenOff(f"{exc} The upload broke off after {length - left} of "
                                  f"{length} bytes.") from exc
        if not chunk:
            return
        left -= len(chunk)
        yield chunk


def gathered(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The chunks joined into blocks of about `size` bytes (a libvirt stream sends big
    blocks faster than many small ones; a file takes the pieces as they are)."""
    parts: list[bytes] = []
    held = 0
    for chunk in chunks:
        if len(chunk) >= size and not parts:
            yield chunk
            continue
        parts.append(chunk)
        held += len(chunk)
        if held >= size:
            yield b"".join(parts)
            parts, held = [], 0
    if parts:
        yield b"".join(parts)


def _recreate_empty(volume: Volume, capacity: int) -> None:
    """Start from a fresh sparse volume, so that holes in the stream read as zeros."""
    pool = volume.pool
    host = pool.host.virt_target
    virt.delete_volume(host, volume.path)
    virt.create_volume(host, pool.name, volume.name, max(capacity, 1), volume.format or "raw")


@dataclass
class _Progress:
    """What an upload did so far: whether a byte reached the volume yet."""

    written: bool = False


def _head(chunks: Iterator[bytes], length: int) -> tuple[bytes, list[bytes]]:
    """The image's start (HEADER_BYTES, or all of a shorter body) and the pieces it came
    in, read before anything is written."""
    pieces: list[bytes] = []
    held = 0
    for chunk in chunks:
        if held + len(chunk) > length:
            raise JobError(f"The body is longer than its Content-Length ({length}).")
        pieces.append(chunk)
        held += len(chunk)
        if held >= HEADER_BYTES:
            break
    if held < min(length, HEADER_BYTES):
        raise UploadBrokenOff(f"The upload ended after {held} of {length} bytes.")
    return b"".join(pieces)[:HEADER_BYTES], pieces


def _receive(volume: Volume, job: Job, chunks: Iterable[bytes], length: int,
             reporter: ProgressReporter, progress: _Progress) -> ImageFacts:
    """Check the image's start, then copy `length` bytes from `chunks` into the volume;
    returns what the start says. A start refused (ImageRefused) leaves the volume as it
    was: not a byte of it was written."""
    pool = volume.pool
    reporter.update(0, total=length, message=f"Receiving {volume.name}", force=True)
    body = iter(chunks)
    header, pieces = _head(body, length)
    facts = detect_format(header, volume.format or "raw")
    content.mark_writing(volume, job)
    progress.written = True
    done = 0
    make_empty = functools.partial(_recreate_empty, volume, length)
    with volume_io.replacing_writer(pool.host, volume.path, make_empty=make_empty) as upload:
        rest: Iterable[bytes] = itertools.chain(pieces, body)
        if not isinstance(upload, volume_io.FileUpload):
            rest = gathered(rest, READ)
        for chunk in rest:
            if done + len(chunk) > length:
                raise JobError(f"The body is longer than its Content-Length ({length}).")
            upload.write(chunk)
            done += len(chunk)
            reporter.update(done, message=f"Receiving {volume.name}")
        if done < length:
            raise UploadBrokenOff(f"The upload ended after {done} of {length} bytes.")
    reporter.update(done, message="Checking the image", force=True)
    return facts


def _discard(volume: Volume) -> None:
    pool = volume.pool
    try:
        virt.delete_volume(pool.host.virt_target, volume.path)
    except VirtError:
        pass
    Volume.objects.filter(pk=volume.pk).delete()
    resync_pool(pool)


def _empty_again(volume: Volume, capacity: int) -> str:
    """After a broken-off transfer: the volume empty, at its former size. Says what was done."""
    pool = volume.pool
    try:
        _recreate_empty(volume, capacity)
        _store_volume(pool, virt.volume_details(pool.host.virt_target,  # type: ignore[arg-type]
                                                volume.path))
    except VirtError as exc:
        _discard(volume)
        return f"The partial upload could not be cleared ({exc}); the volume was deleted."
    content.mark_ready(volume, volume.format)
    resync_pool(pool)
    return "The partial upload was discarded: the volume is empty."


def _after_failure(volume: Volume, capacity: int, progress: _Progress) -> str:
    if not progress.written:
        return "Nothing was written: the volume keeps its content."
    return _empty_again(volume, capacity)


def receive_upload(job: Job, volume: Volume, chunks: Iterable[bytes], length: int, *,
                   user: Any = None, request: Any = None) -> UploadOutcome:
    """Run the upload job `start_upload` made, on `chunks` (`length` bytes in all).

    The image's start is checked before a byte is written (a refused one leaves the
    volume as it was); then the volume is overwritten (or re-created empty first: same
    name and format): a raw volume then has the size of the upload, a qcow2 volume the
    virtual size its header says. The image is checked as a whole afterwards (see
    storage.images); one refused then is deleted with its volume.
    """
    outcome = UploadOutcome(job=job)
    capacity_before = volume.capacity

    def failed(message: str) -> None:
        record("volume.upload", user=user, request=request, target=volume, result="failed",
               message=message, bytes=length)

    def body_fn(job: Job, reporter: ProgressReporter) -> dict[str, Any]:
        reporter.configure(cancellable=True)
        pool = volume.pool
        declared = volume.format or "raw"
        progress = _Progress()
        try:
            facts = _receive(volume, job, chunks, length, reporter, progress)
            path = reachable_path(volume)
            if path is not None:
                facts = check_file(path, declared)
            reported, backing = virt.content_report(pool.host.virt_target, volume.path)
            check_libvirt_report(declared, reported, backing)
        except ImageRefused as exc:
            outcome.refused = True
            if not progress.written:
                failed(str(exc))
                raise JobError(f"{exc} Nothing was written: the volume keeps its "
                               "content.") from exc
            _discard(volume)
            failed(str(exc))
            raise JobError(f"{exc} The uploaded volume was deleted.") from exc
        except JobCancelled:
            failed(f"cancelled; {_after_failure(volume, capacity_before, progress)}")
            raise
        except (VirtError, StorageError, JobError) as exc:
            message = f"{exc} {_after_failure(volume, capacity_before, progress)}"
            failed(message)
            raise JobError(message) from exc
        info = virt.volume_details(pool.host.virt_target, volume.path)
        stored = _store_volume(pool, info)  # type: ignore[arg-type]
        content.mark_ready(stored)
        resync_pool(pool)
        record("volume.upload", user=user, request=request, target=stored, bytes=length,
               format=facts.format, virtual_size=facts.virtual_size)
        return {"volume": stored.pk, "bytes": length, "format": facts.format,
                "virtual_size": facts.virtual_size}

    run_job(job.pk, body_fn, task_id=job.celery_task_id, worker=WORKER)
    job.refresh_from_db()
    return outcome


def upload(volume: Volume, body: IO[bytes], length: int, *, user: Any = None,
           request: Any = None) -> UploadOutcome:
    """The whole upload from a file-like body (the DRF view's path)."""
    job = start_upload(volume, length, user=user, request=request)
    return receive_upload(job, volume, body_chunks(body, length), length, user=user,
                          request=request)
