"""guests.provisioning on the demo host (libvirt's test driver): volumes made through the
storage services, filled, the guest defined on them; and on any failure one undo that
leaves nothing it made and touches nothing it did not make."""

from __future__ import annotations

from typing import Any

import pytest

from guests.create import plan
from guests.create_request import checked_request
from guests.errors import GuestError
from guests.models import Guest
from guests.provisioning import GuestPlan, NewVolume, Provisioning, provision
from hosts.models import Host
from hosts.virt import VirtTarget, domains
from hosts.virt import volumes as virt_volumes
from storage import services as storage
from storage.models import Pool, Volume
from xenweb.audit.models import AuditRecord
from xenweb.jobs.errors import JobCancelled
from xenweb.jobs.models import Job

pytestmark = pytest.mark.django_db
MIB = 1024 * 1024


class Boom(Exception):
    pass


@pytest.fixture
def pool(demo: Host) -> Pool:
    return Pool.objects.get(host=demo, name="default")


@pytest.fixture
def existing(pool: Pool) -> Volume:
    """A volume that was there before: a disk of the new guest, never the undo's."""
    return storage.create_volume(pool, name="before.img", capacity=MIB)


def guest_plan(demo: Host, name: str, existing: Volume | None = None) -> GuestPlan:
    data = checked_request({"name": name, "host": demo.pk, "type": "pv", "memory_mib": 256,
                            "bootloader": "pygrub", "labels": ["web"],
                            "disks": [{"volume": existing.pk}] if existing else []})
    guest, to_create = plan(data)
    assert to_create == []
    return guest


def new_volumes(pool: Pool, name: str, count: int = 2) -> list[NewVolume]:
    return [NewVolume(pool=pool, name=f"{name}-disk{index}.img", capacity=2 * MIB)
            for index in range(count)]


def libvirt_paths(host: Host) -> set[str]:
    return {volume.path for volume in virt_volumes.describe_pool(VirtTarget(host.uri),
                                                                 "default").volumes}


def domain_names(host: Host) -> set[str]:
    return {info.name for info in domains.list_domains(VirtTarget(host.uri))}


def test_success_makes_the_volumes_fills_them_and_defines_the_guest(
        demo: Host, pool: Pool, existing: Volume, admin_user: Any) -> None:
    seen: list[list[str]] = []
    guest = provision(guest_plan(demo, "prov-ok", existing), new_volumes(pool, "prov-ok"),
                      lambda work: seen.append([volume.name for volume in work.volumes]),
                      user=admin_user)
    assert seen == [["prov-ok-disk0.img", "prov-ok-disk1.img"]]
    assert Guest.objects.get(pk=guest.pk).labels == ["web"]
    defined = domains.get_domain(VirtTarget(demo.uri), str(guest.uuid)).xml
    made = [Volume.objects.get(pool=pool, name=f"prov-ok-disk{i}.img") for i in range(2)]
    # The existing disk keeps the first name; the new ones take the next, same bus.
    assert [(disk.target, disk.source, disk.bus) for disk in defined.disks] == [
        ("xvda", existing.path, "xen"), ("xvdb", made[0].path, "xen"),
        ("xvdc", made[1].path, "xen")]
    assert {volume.path for volume in made} <= libvirt_paths(demo)
    assert all(volume.content_state == "ready" for volume in made)
    # One audit record per volume made, as when a volume is created from the API.
    created = AuditRecord.objects.filter(action="volume.create", result="ok",
                                         target_type="storage.volume")
    assert sorted(int(entry.target_id) for entry in created) == sorted(
        volume.pk for volume in [existing, *made])
    assert AuditRecord.objects.filter(action="guest.create", result="ok",
                                      target_id=str(guest.pk)).exists()


def test_a_failing_fill_removes_what_it_made_and_keeps_what_was_there(
        demo: Host, pool: Pool, existing: Volume, admin_user: Any) -> None:
    error = Boom("the copy broke")
    made: list[Volume] = []

    def fill(work: Provisioning) -> None:
        made.extend(work.volumes)
        raise error

    with pytest.raises(Boom) as raised:
        provision(guest_plan(demo, "prov-fill", existing), new_volumes(pool, "prov-fill"),
                  fill, user=admin_user)
    assert raised.value is error  # the caller's own error, unchanged
    assert len(made) == 2
    paths = libvirt_paths(demo)
    assert not {volume.path for volume in made} & paths
    assert not Volume.objects.filter(pk__in=[volume.pk for volume in made]).exists()
    assert existing.path in paths and Volume.objects.filter(pk=existing.pk).exists()
    assert not Guest.objects.filter(name="prov-fill").exists()
    assert "prov-fill" not in domain_names(demo)
    deleted = AuditRecord.objects.filter(action="volume.delete", result="ok")
    assert sorted(int(entry.target_id) for entry in deleted) == sorted(v.pk for v in made)


def test_a_failing_definition_removes_the_volumes_and_leaves_other_guests_alone(
        demo: Host, pool: Pool, admin_user: Any) -> None:
    # libvirt has a domain of this name (the database does not know it): the definition
    # is refused, and that domain is not the undo's to remove.
    guest_plan_ = guest_plan(demo, "prov-def")
    taken = domains.define_domain(VirtTarget(demo.uri), guest_plan_.spec)
    before = libvirt_paths(demo)
    with pytest.raises(GuestError, match="already"):
        provision(guest_plan_, new_volumes(pool, "prov-def"), user=admin_user)
    assert libvirt_paths(demo) == before
    assert not Volume.objects.filter(name__startswith="prov-def-").exists()
    assert not Guest.objects.filter(name="prov-def").exists()
    assert domains.get_domain(VirtTarget(demo.uri), taken.uuid).name == "prov-def"
    assert AuditRecord.objects.filter(action="guest.create", result="failed").exists()


def test_a_guest_defined_but_not_stored_is_undefined(
        demo: Host, pool: Pool, admin_user: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def store_fails(*args: Any, **kwargs: Any) -> Guest:
        raise Boom("the database went away")

    monkeypatch.setattr("guests.provisioning.store_guest", store_fails)
    with pytest.raises(Boom):
        provision(guest_plan(demo, "prov-half"), new_volumes(pool, "prov-half"),
                  user=admin_user)
    assert "prov-half" not in domain_names(demo)
    assert not Volume.objects.filter(name__startswith="prov-half-").exists()


def test_a_job_writes_its_volumes_until_fill_says_they_are_ready(
        demo: Host, pool: Pool, admin_user: Any) -> None:
    from storage.content import mark_ready

    job = Job.objects.create(kind="guest.import", title="t", state="running",
                             owner=admin_user)
    states: list[str] = []

    def fill_one(work: Provisioning) -> None:
        states.extend(Volume.objects.get(pk=v.pk).content_state for v in work.volumes)
        mark_ready(work.volumes[0])  # the second one is never checked

    with pytest.raises(GuestError, match="being written"):
        provision(guest_plan(demo, "prov-job"), new_volumes(pool, "prov-job"), fill_one,
                  user=admin_user, job=job)
    assert states == ["writing", "writing"]
    assert not Volume.objects.filter(name__startswith="prov-job-").exists()
    assert not Guest.objects.filter(name="prov-job").exists()

    def fill_all(work: Provisioning) -> None:
        for volume in work.volumes:
            mark_ready(volume)

    guest = provision(guest_plan(demo, "prov-job"), new_volumes(pool, "prov-job"), fill_all,
                      user=admin_user, job=job)
    assert Guest.objects.filter(pk=guest.pk).exists()


@pytest.mark.parametrize("error", [Boom("disk 2 broke"), JobCancelled()])
def test_kept_volumes_survive_a_failure_but_not_a_cancel(
        demo: Host, pool: Pool, admin_user: Any, error: Exception) -> None:
    def fill(work: Provisioning) -> None:
        work.keep(work.volumes[0])  # checked already, worth keeping
        raise error

    work = Provisioning(guest_plan(demo, "prov-keep"), new_volumes(pool, "prov-keep"),
                        user=admin_user)
    with pytest.raises(type(error)):
        work.run(fill)
    left = set(Volume.objects.filter(name__startswith="prov-keep-").values_list("name",
                                                                                 flat=True))
    if isinstance(error, JobCancelled):
        assert left == set()
        assert sorted(work.removed) == sorted(v.path for v in work.volumes)
    else:
        assert left == {"prov-keep-disk0.img"}
        assert work.removed == [work.volumes[1].path]
    assert not Guest.objects.filter(name="prov-keep").exists()


def test_a_replaced_volume_becomes_the_disk(demo: Host, pool: Pool, admin_user: Any) -> None:
    """Fill may swap a volume for one it made from it (P2V's qcow2 conversion)."""
    def fill(work: Provisioning) -> None:
        staging = work.volumes[0]
        converted = storage.create_volume(pool, name="prov-swap-disk0.qcow2", capacity=MIB,
                                          fmt="qcow2")
        work.replace(0, converted)
        storage.discard_new_volume(staging)

    guest = provision(guest_plan(demo, "prov-swap"), new_volumes(pool, "prov-swap", 1), fill,
                      user=admin_user)
    disks = domains.get_domain(VirtTarget(demo.uri), str(guest.uuid)).xml.disks
    converted = Volume.objects.get(name="prov-swap-disk0.qcow2")
    assert [(disk.source, disk.format) for disk in disks] == [(converted.path, "qcow2")]
    assert not Volume.objects.filter(name="prov-swap-disk0.img").exists()


def test_too_many_disks_are_refused_before_anything_is_made(
        demo: Host, pool: Pool, admin_user: Any) -> None:
    with pytest.raises(GuestError, match="No device name is left"):
        provision(guest_plan(demo, "prov-many"), new_volumes(pool, "prov-many", 27),
                  user=admin_user)
    assert not Volume.objects.filter(name__startswith="prov-many-").exists()
    assert not AuditRecord.objects.filter(action="volume.create").exists()
