"""Handing a P2V login password from the web process to the worker that runs the job.

The password must reach a worker on any machine (Celery over Redis) and never be
stored: not in the job row, an audit record, a log, a task message or a file. So:

- The web process encrypts it (AES-256-GCM with a key derived from SECRET_KEY, which
  every process of the appliance shares; the job's task id is the associated data, so a
  value cannot be replayed for another job) and SETs it in Redis under a key named after
  the job's task id, with a TTL of ``P2V_PASSWORD_TTL`` seconds (5 minutes by default).
  If Redis cannot take it, the start is refused and no job remains.
- The worker takes it with GETDEL when the job starts: read and deleted in one step, so
  it is handed over at most once. The job keeps it in memory only (a ``Secret``), for the
  reconnects of a resumed copy, and passes it to ssh through a FIFO (see ssh.py).
- A job that starts after the TTL (workers busy for longer), or a second time, finds
  nothing and fails saying so: the user starts the P2V again with the password.

Why encrypted, when the key lives for minutes: Redis may write snapshots (Debian's
redis-server service does by default), and a snapshot then holds only ciphertext that is
useless without SECRET_KEY, and only while the TTL runs. Why not the Celery message:
task arguments stay in the broker until the job is acknowledged (acks_late: its whole
run) and show in worker logs and monitoring. Why not the job row, even encrypted: the
database is kept and backed up for years.
"""

from __future__ import annotations

import os

import redis
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.utils.crypto import salted_hmac

from conversions.p2v.ssh import P2VError, Secret

NONCE_BYTES = 12
REDIS_ERRORS = (redis.RedisError, OSError)


class HandoffError(P2VError):
    """The password could not be handed over or taken; the message says why."""


def _cipher() -> AESGCM:
    # The salt names the module's old place: a web process and a worker of different
    # versions must derive the same key for a password in flight.
    key = salted_hmac("xenweb.storage.p2v.handoff", "password handoff",
                      algorithm="sha256").digest()
    return AESGCM(key)


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.P2V_PASSWORD_REDIS_URL, socket_connect_timeout=2,
                                socket_timeout=5)


def redis_key(task_id: str) -> str:
    """In the appliance's own namespace (xenweb.redis_namespace)."""
    return f"{settings.REDIS_PREFIX}:p2v:password:{task_id}"


def seal(password: Secret, task_id: str) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + _cipher().encrypt(nonce, password.reveal().encode(), task_id.encode())


def unseal(sealed: bytes, task_id: str) -> Secret:
    try:
        plain = _cipher().decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:],
                                  task_id.encode())
    except (InvalidTag, ValueError) as exc:
        raise HandoffError("The password handed over for this job cannot be read: do the "
                           "web process and the workers share one SECRET_KEY?") from exc
    return Secret(plain.decode())


def hand_over(password: Secret, task_id: str) -> None:
    """Leave the sealed password for the job's worker, for ``P2V_PASSWORD_TTL`` seconds."""
    try:
        with _client() as client:
            client.set(redis_key(task_id), seal(password, task_id),
                       ex=settings.P2V_PASSWORD_TTL)
    except REDIS_ERRORS as exc:
        raise HandoffError(f"The password cannot be handed to the worker: Redis is "
                           f"unreachable ({exc.__class__.__name__}). Try again, or log in "
                           "with the appliance's P2V key.") from exc


def take(task_id: str) -> Secret:
    """The job's password, removed from Redis as it is read; HandoffError when it is not
    there (expired, already taken) or cannot be read."""
    try:
        with _client() as client:
            sealed = client.getdel(redis_key(task_id))
    except REDIS_ERRORS as exc:
        raise HandoffError(f"The password for this job cannot be fetched: Redis is "
                           f"unreachable ({exc.__class__.__name__}). Start the P2V "
                           "again.") from exc
    if sealed is None:
        minutes = max(1, round(settings.P2V_PASSWORD_TTL / 60))
        raise HandoffError(f"The password for this job is gone: it is kept for {minutes} "
                           "minute(s) after the start and handed to one worker only. Start "
                           "the P2V again with the password.")
    return unseal(sealed, task_id)


def discard(task_id: str) -> None:
    """Remove a password no job will take (best effort: the TTL removes it anyway)."""
    try:
        with _client() as client:
            client.delete(redis_key(task_id))
    except REDIS_ERRORS:
        pass
