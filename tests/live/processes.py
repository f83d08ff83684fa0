"""Real processes for the live suites: a Celery worker and the web server, started on the
test database, with output kept in files for the failure report."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

BASE = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def database_url() -> str:
    """The URL of the database the test run uses (the test database, once created)."""
    cfg = connection.settings_dict
    if cfg["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{cfg['NAME']}"
    auth = cfg["USER"] + (f":{cfg['PASSWORD']}" if cfg["PASSWORD"] else "")
    return f"postgres://{auth}@{cfg['HOST'] or '127.0.0.1'}:{cfg['PORT'] or 5432}/{cfg['NAME']}"


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DATABASE_URL=database_url(),
        XENWEB_DATA_DIR=str(settings.DATA_DIR),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


class Service:
    """A child process in its own process group, so stop() ends it and its children."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.log_path = settings.DATA_DIR / f"{name}-{uuid.uuid4().hex[:8]}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            argv, cwd=BASE, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill the whole process group at once, as a crash or the OOM killer would."""
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in path.read_text().split()]

    def kill_pid(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
            except ProcessLookupError:
                pass
        self._log.close()


class CeleryWorker(Service):
    def __init__(
        self, hostname: str | None = None, concurrency: int = 2, queue: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.hostname = hostname or f"test-{uuid.uuid4().hex[:8]}@localhost"
        argv = [
            str(BIN / "celery"), "-A", "xenweb", "worker", "--loglevel", "INFO",
            "--pool", "prefork", "--concurrency", str(concurrency),
            "--hostname", self.hostname, "--without-mingle", "--without-gossip",
            "-Q", queue or settings.CELERY_TASK_DEFAULT_QUEUE,
        ]
        super().__init__("celery-worker", argv, child_env(**(env or {})))
        try:
            wait_for(lambda: "ready." in self.output() or not self.alive(), 60, "worker ready")
        except TimeoutError:
            self.stop()
            raise
        if not self.alive():
            raise RuntimeError(f"the Celery worker did not start:\n{self.output()}")


class WebServer(Service):
    """The web process as the Procfile runs it (xenweb.webserver: uvicorn), on a free port."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "xenweb.webserver", "--port", str(self.port)]
        super().__init__("web", argv, child_env(**(env or {})))
        try:
            wait_for(self._listening, 60, "the web server listening")
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"the web server did not start:\n{self.output()}") from None

    def _listening(self) -> bool:
        if not self.alive():
            raise RuntimeError(f"the web server exited:\n{self.output()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return True

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


class PrivateRedis:
    """A redis-server of the test's own, on a free port, that a test may stop and start
    again (same port) without touching the Redis the rest of the suite uses."""

    def __init__(self, directory: Path) -> None:
        self.port, self.directory = free_port(), directory
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        """The base URL, as REDIS_URL takes it (the settings add the database)."""
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def answering() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                return False
            return True

        wait_for(answering, 20, "the private redis-server")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

