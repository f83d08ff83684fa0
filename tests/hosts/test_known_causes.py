"""libvirt's errors are translated where the cause is known; its own words stay in the
error's detail, and a failed job's log keeps them."""

from __future__ import annotations

from typing import Any

import pytest

from guests.models import Guest
from hosts.models import Host
from hosts.virt import VirtError
from hosts.virt import domains as virt
from hosts.virt.errors import known_cause
from xenweb.jobs.errors import JobError
from xenweb.jobs.runner import run_job
from xenweb.jobs.services import start_job

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("detail", "says"), [
    ("Cannot get interface MTU on 'xenbr0': No such device",
     "the bridge 'xenbr0' of a network interface does not exist there"),
    ("internal error: Network 'default' is not active.", "the network 'default' is not running"),
    ("Requested operation is not valid: cannot migrate domain with 1 snapshots",
     "the guest has 1 snapshot(s), and libvirt moves no guest with snapshots"),
    ("Cannot access storage file '/var/lib/xen/images/gone.img': No such file or directory",
     "a disk of the guest is missing there: /var/lib/xen/images/gone.img"),
    ("internal error: libxenlight failed to create new domain: Cannot allocate memory",
     "the host has too little free memory"),
])
def test_known_causes_in_words(detail: str, says: str) -> None:
    assert (known_cause(detail) or "").startswith(says)


def test_unknown_causes_keep_libvirts_words() -> None:
    assert known_cause("internal error: something new") is None


def test_a_real_error_is_translated_and_keeps_the_detail(demo: Host) -> None:
    web = Guest.objects.get(host=demo, name="web01")  # running
    with pytest.raises(VirtError) as raised:
        virt.start(demo.virt_target, str(web.uuid))
    assert raised.value.message.endswith("on host 'demo': the guest is already running.")
    assert "Domain 'web01' is already running" in (raised.value.detail or "")


def test_a_failed_jobs_log_keeps_the_hypervisors_words(demo: Host, admin_user: Any) -> None:
    web = Guest.objects.get(host=demo, name="web01")

    def body(job: Any, reporter: Any) -> None:
        try:
            virt.start(demo.virt_target, str(web.uuid))
        except VirtError as exc:
            raise JobError(str(exc)) from exc

    job = start_job(None, kind="test", owner=admin_user, title="Start web01", enqueue=False)
    run_job(job.pk, body, task_id="t", worker="w")
    job.refresh_from_db()
    assert job.state == "failed" and job.error.endswith("the guest is already running.")
    assert any("The hypervisor said: internal error: Domain 'web01' is already running"
               in line for _stamp, line in job.log)
