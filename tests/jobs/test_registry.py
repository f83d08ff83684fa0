"""Jobs start by task name: the registry finds every app's tasks and their retry rules."""

from __future__ import annotations

import pytest

from xenweb.jobs.registry import retry_rule, task_named


def test_every_app_task_is_found_by_name() -> None:
    for name in ("guests.tasks.migrate", "guests.tasks.snapshot_create", "storage.tasks.clone",
                 "storage.tasks.p2v", "storage.tasks.import_guest", "xenweb.jobs.tasks.selftest",
                 "hosts.tasks.sample_metrics"):
        assert task_named(name).name == name


def test_an_unknown_name_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match=r"no Celery task is registered as 'guests\.tasks\.nope'"):
        task_named("guests.tasks.nope")


def test_retry_rules_come_with_the_tasks() -> None:
    assert retry_rule("guests.tasks.migrate").permission == "guests.change_guest"
    assert retry_rule("guests.tasks.evacuate").permission == "hosts.change_host"
    assert retry_rule("storage.tasks.clone") is None
