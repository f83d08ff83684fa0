"""Tasks by name: services start jobs by a task's registered name, never by importing the
tasks module (tasks import the job bodies, which import the services: a circle).

Celery registers a task when its module is imported. The worker imports every app's
tasks module at start; a web process does so here, once, the first time a name is needed.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import current_app

_lock = threading.Lock()
_loaded = False


def _load_task_modules() -> None:
    # Only the apps' tasks modules. The loader's import_default_modules() also runs Celery's
    # Django fix-up (system checks); called from the worker_ready handler (an interrupted
    # job's summary asks can_retry) it kept a restarted worker from ever becoming ready.
    global _loaded
    with _lock:
        if not _loaded:
            current_app.autodiscover_tasks(force=True)
            _loaded = True


def task_named(name: str) -> Any:
    """The registered Celery task; KeyError names an unknown one (a programming error)."""
    if name not in current_app.tasks:
        _load_task_modules()
    try:
        return current_app.tasks[name]
    except KeyError:
        raise KeyError(f"no Celery task is registered as {name!r}") from None


def retry_rule(name: str) -> Any:
    """How a job of this task may be started again (tasks_base.Retry), or None."""
    from xenweb.jobs.tasks_base import RETRYABLE

    if name not in RETRYABLE:
        _load_task_modules()
    return RETRYABLE.get(name)
