"""Item 8: two appliances sharing a Redis (same server, same database numbers) never see
each other's jobs or events: every queue, key and group is in the appliance's own
namespace (xenweb.redis_namespace), derived from its secret key.

The derivations run the real settings in fresh processes; the isolation runs on the real
Redis of the test run: two channel layers, kombu queues, and a real Celery worker
configured as another appliance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync
from celery import Celery
from channels_redis.core import RedisChannelLayer
from django.conf import settings
from kombu import Connection

from tests.live.processes import CeleryWorker, wait_for
from xenweb.jobs import services
from xenweb.jobs.models import Job
from xenweb.jobs.tasks import selftest
from xenweb.redis_namespace import appliance_namespace

BASE = Path(__file__).resolve().parents[2]
OVERRIDES = ("SECRET_KEY", "XENWEB_QUEUE", "XENWEB_REDIS_PREFIX", "XENWEB_REDIS_DB_BASE")

SHOW = """
import json, django
django.setup()
from django.conf import settings as s
from conversions.p2v.handoff import redis_key
print(json.dumps({
    "queue": s.CELERY_TASK_DEFAULT_QUEUE,
    "kombu": s.CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"],
    "channels": s.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"],
    "cache": s.CACHES["default"]["KEY_PREFIX"],
    "p2v": redis_key(""),
    "broker": s.CELERY_BROKER_URL,
}))
"""


def derive(data_dir: Path, **env: str) -> dict[str, str]:
    """The Redis names of an appliance with this data dir, as its processes compute them."""
    child = {k: v for k, v in os.environ.items() if k not in OVERRIDES}
    child.update(DJANGO_SETTINGS_MODULE="xenweb.settings", XENWEB_DATA_DIR=str(data_dir),
                 PYTHONPATH=str(BASE), **env)
    done = subprocess.run([sys.executable, "-c", SHOW], cwd=BASE, env=child,
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout)


def _names(derived: dict[str, str]) -> set[str]:
    return {v for k, v in derived.items() if k != "broker"}


def test_two_data_dirs_get_disjoint_names_on_the_same_redis(tmp_path: Path) -> None:
    a, b = derive(tmp_path / "a"), derive(tmp_path / "b")
    assert a["broker"] == b["broker"]  # the same Redis database: only the names separate
    for key in ("queue", "kombu", "channels", "cache", "p2v"):
        assert a[key] != b[key], key
        # No name of one is a prefix of the other's (a SCAN/flush by prefix stays inside).
        assert not a[key].startswith(b[key]) and not b[key].startswith(a[key]), key
    assert a["queue"] != "xenweb" and a["channels"] != "asgi"
    # Stable: every process of one appliance (web, worker, beat, watcher) agrees.
    assert derive(tmp_path / "a") == a


def test_one_secret_key_is_one_appliance_and_overrides_win(tmp_path: Path) -> None:
    """Workers on other machines share the appliance's SECRET_KEY, not its data dir path."""
    key = "k" * 64
    here, there = derive(tmp_path / "here", SECRET_KEY=key), derive(tmp_path / "there",
                                                                    SECRET_KEY=key)
    assert here == there
    custom = derive(tmp_path / "here", XENWEB_QUEUE="jobs-a", XENWEB_REDIS_PREFIX="site-a")
    assert custom["queue"] == "jobs-a"
    assert custom["kombu"] == "site-a:" and custom["channels"] == "site-a:asgi"
    assert custom["cache"] == "site-a" and custom["p2v"].startswith("site-a:")


def test_the_namespace_reveals_nothing_of_the_key() -> None:
    key = "s3cret-" * 10
    name = appliance_namespace(key)
    assert name.startswith("xenweb-") and len(name) == len("xenweb-") + 10
    assert "s3cret" not in name and appliance_namespace(key + "x") != name


# --- on the real Redis ----------------------------------------------------------------------


def _other_prefix() -> str:
    return appliance_namespace(f"another appliance {uuid.uuid4()}")


def test_channel_layers_with_different_prefixes_do_not_share_groups() -> None:
    """Appliance A and B, same Redis database, same group name: B's event never reaches
    A's member. A's own message sent after B's is the first and only thing A receives
    (messages to one channel arrive in order, so B's would have come first)."""
    config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    layer_a = RedisChannelLayer(hosts=config["hosts"], prefix=config["prefix"])
    layer_b = RedisChannelLayer(hosts=config["hosts"], prefix=f"{_other_prefix()}:asgi")

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        a_member = await layer_a.new_channel()
        b_member = await layer_b.new_channel()
        await layer_a.group_add("events", a_member)
        await layer_b.group_add("events", b_member)
        await layer_b.group_send("events", {"type": "inventory.update", "from": "B"})
        await layer_a.group_send("events", {"type": "inventory.update", "from": "A"})
        got_a = await layer_a.receive(a_member)
        got_b = await layer_b.receive(b_member)
        await layer_a.group_discard("events", a_member)
        await layer_b.group_discard("events", b_member)
        await layer_a.close_pools()
        await layer_b.close_pools()
        return got_a, got_b

    got_a, got_b = async_to_sync(scenario)()
    assert got_a["from"] == "A" and got_b["from"] == "B"


def test_kombu_queues_of_the_same_name_are_separate() -> None:
    """The broker level: even a queue of the same name (an operator who set the same
    XENWEB_QUEUE on both) is separate under two key prefixes."""
    queue = f"shared-{uuid.uuid4().hex[:8]}"
    a_options = dict(settings.CELERY_BROKER_TRANSPORT_OPTIONS)
    b_options = {**a_options, "global_keyprefix": f"{_other_prefix()}:"}
    with Connection(settings.CELERY_BROKER_URL, transport_options=a_options) as a, \
            Connection(settings.CELERY_BROKER_URL, transport_options=b_options) as b:
        a_queue, b_queue = a.SimpleQueue(queue), b.SimpleQueue(queue)
        a_queue.put({"job": "A"})
        with pytest.raises(b_queue.Empty):
            b_queue.get(block=False)
        message = a_queue.get(block=False)
        assert message.payload == {"job": "A"}
        message.ack()
        a_queue.close()
        b_queue.close()


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_worker_of_another_appliance_never_takes_our_jobs(admin_user: Any) -> None:
    """A real Celery worker configured as appliance B (same Redis, same database, same
    queue name) runs B's job and leaves A's alone: A's message stays in A's queue.

    A is an appliance of its own prefix too, not this test run's: a worker of this run
    (the live suites') may be consuming the run's queue and would take A's job itself."""
    a_prefix, b_prefix = _other_prefix(), _other_prefix()
    worker = CeleryWorker(env={"XENWEB_REDIS_PREFIX": b_prefix})
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    a_queue_key = f"{a_prefix}:{settings.CELERY_TASK_DEFAULT_QUEUE}"
    apps = []
    try:
        params = {"steps": 1, "step_seconds": 0.0}
        jobs = [services.start_job(selftest.name, kind="selftest", owner=admin_user, title=title,
                                   params=params, total=1, enqueue=False)
                for title in ("A", "B")]
        for job, prefix in zip(jobs, (a_prefix, b_prefix), strict=True):
            app = Celery(f"appliance-{prefix}", broker=settings.CELERY_BROKER_URL)
            app.conf.broker_transport_options = {**settings.CELERY_BROKER_TRANSPORT_OPTIONS,
                                                 "global_keyprefix": f"{prefix}:"}
            app.conf.task_default_queue = settings.CELERY_TASK_DEFAULT_QUEUE
            app.send_task(job.task_name, args=[job.pk], task_id=job.celery_task_id)
            apps.append(app)
        job_a, job_b = jobs

        def b_done() -> bool:
            return Job.objects.get(pk=job_b.pk).state == "succeeded"

        wait_for(b_done, 120, "appliance B's worker to run B's job")
        assert Job.objects.get(pk=job_a.pk).state == "queued"
        assert broker.llen(a_queue_key) == 1  # A's message, untouched
        assert job_a.celery_task_id not in worker.output()
    finally:
        for app in apps:
            app.close()
        worker.stop()
        broker.delete(a_queue_key)
        broker.close()
