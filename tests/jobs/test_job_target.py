"""A job body reads its target of the kind it expects: another kind with the same id is not
its target."""

from __future__ import annotations

from typing import Any

import pytest

from guests.models import Guest
from hosts.models import Host
from xenweb.jobs.errors import JobError
from xenweb.jobs.models import Job, JobState
from xenweb.jobs.selectors import job_target, require_target


def _job(target: Any) -> Job:
    return Job.objects.create(kind="test.read", title="t", state=JobState.QUEUED,
                              target_type=target._meta.label_lower, target_id=str(target.pk))


@pytest.mark.django_db
def test_the_target_of_the_expected_kind_is_found() -> None:
    host = Host.objects.create(name="h", uri="qemu+ssh://root@h/system")
    guest = Guest.objects.create(name="g", host=host, uuid="6ba7b810-9dad-11d1-80b4-00c04fd430c8")
    assert job_target(_job(guest), Guest.objects.select_related("host")) == guest
    assert job_target(_job(host), Host.objects.all()) == host


@pytest.mark.django_db
def test_another_kind_with_the_same_id_is_not_the_target() -> None:
    host = Host.objects.create(name="h", uri="qemu+ssh://root@h/system")
    guest = Guest.objects.create(name="g", host=host, uuid="6ba7b810-9dad-11d1-80b4-00c04fd430c8")
    job = Job.objects.create(kind="test.read", title="t", state=JobState.QUEUED,
                             target_type="hosts.host", target_id=str(guest.pk))
    assert job_target(job, Guest.objects.all()) is None


@pytest.mark.django_db
def test_a_gone_target_is_a_clear_job_error() -> None:
    host = Host.objects.create(name="h", uri="qemu+ssh://root@h/system")
    job = _job(host)
    host.delete()
    assert job_target(job, Host.objects.all()) is None
    with pytest.raises(JobError, match="The host no longer exists"):
        require_target(job, Host.objects.all(), gone="The host no longer exists.")
    assert job_target(Job(kind="x", title="x"), Host.objects.all()) is None
