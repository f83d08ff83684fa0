"""The volume-attachment records: written whenever a cached guest is saved, read by every
"who uses this volume" question in one query (storage.attachments)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.apps import apps

from guests.attachments import migration_save, record
from guests.models import Guest
from guests.placement.exclusivity import disk_conflicts
from hosts.models import Host
from storage import attachments
from storage.models import Pool, Volume, VolumeAttachment

pytestmark = pytest.mark.django_db

Role = VolumeAttachment.Role


def host(name: str) -> Host:
    return Host.objects.create(name=name, uri=f"test:///{name}")


def pool(on: Host, *, shared: bool = False, path: str = "/srv/images") -> Pool:
    return Pool.objects.create(host=on, uuid=uuid.uuid4(), name=f"p-{uuid.uuid4().hex[:6]}",
                               pool_type="dir", target_path=path, shared=shared, active=True)


def volume(of: Pool, name: str) -> Volume:
    return Volume.objects.create(pool=of, name=name, path=f"{of.target_path}/{name}")


def disk(path: str, target: str = "xvda", **extra: Any) -> dict[str, Any]:
    return {"source": path, "target": target, "device": "disk", **extra}


def guest(on: Host, name: str, *disks: dict[str, Any], state: str = "running",
          next_boot: tuple[dict[str, Any], ...] = ()) -> Guest:
    return Guest.objects.create(host=on, uuid=uuid.uuid4(), name=name, state=state,
                                devices={"disks": list(disks),
                                         "next_boot_disks": list(next_boot)})


def rows(of: Guest) -> set[tuple[str, str, str, bool, bool, bool]]:
    return {(a.role, a.path, a.target, a.writable, a.shareable, a.in_use)
            for a in VolumeAttachment.objects.filter(guest=of)}


def test_saving_a_guest_rewrites_its_records() -> None:
    h = host("a1")
    g = guest(h, "web", disk("/srv/images/web.img"),
              disk("/srv/iso/d.iso", "hdc", device="cdrom", readonly=True),
              next_boot=(disk("/srv/images/web.img"), disk("/srv/images/data.img", "xvdb",
                                                           shareable=True)))
    assert rows(g) == {
        ("disk", "/srv/images/web.img", "xvda", True, False, True),
        ("disk", "/srv/iso/d.iso", "hdc", False, False, True),
        ("next_boot_disk", "/srv/images/web.img", "xvda", True, False, True),
        ("next_boot_disk", "/srv/images/data.img", "xvdb", True, True, True),
    }
    g.state = Guest.State.SHUTOFF
    g.devices = {"disks": [disk("/srv/images/other.img")]}
    g.save()
    assert rows(g) == {("disk", "/srv/images/other.img", "xvda", True, False, False)}
    g.delete()
    assert not VolumeAttachment.objects.exists()


def test_a_save_that_names_other_fields_leaves_the_records_alone() -> None:
    g = guest(host("a2"), "web", disk("/srv/images/web.img"))
    VolumeAttachment.objects.filter(guest=g).update(target="sentinel")
    g.labels = ["dmz"]
    g.save(update_fields=["labels"])
    assert VolumeAttachment.objects.get(guest=g).target == "sentinel"
    g.save(update_fields=["state"])
    assert VolumeAttachment.objects.get(guest=g).target == "xvda"


def test_who_uses_a_volume_local_and_shared(django_assert_num_queries: Any) -> None:
    a, b = host("a3"), host("b3")
    local_a, local_b = pool(a), pool(b)
    shared_a = pool(a, shared=True, path="/mnt/nfs")
    web = volume(local_a, "web.img")
    guest(a, "alpha", disk(web.path), state="shutoff")
    guest(b, "beta", disk(web.path))  # the same path on another host: another file
    guest(a, "gamma", disk(web.path))
    with django_assert_num_queries(1):
        users = attachments.guests_using(web)
    assert [g.name for g in users] == ["alpha", "gamma"]
    assert attachments.active_user(web).name == "gamma"
    assert [g.name for g in attachments.guests_using(volume(local_b, "web.img"))] == ["beta"]

    nfs = volume(shared_a, "n.img")
    guest(b, "delta", disk(nfs.path), state="paused")
    assert [g.name for g in attachments.guests_using(nfs)] == ["delta"]  # any host's
    assert attachments.active_user(nfs).name == "delta"
    assert attachments.guests_using(Volume(pool=local_a, name="x", path="")) == []


def test_who_uses_a_pool() -> None:
    a = host("a4")
    images = pool(a)
    web = volume(images, "web.img")
    guest(a, "zeta", disk(web.path), state="shutoff")
    guest(a, "eta", disk("/srv/images/not-listed.img"), disk(web.path, "xvdb"))
    guest(a, "theta", disk("/elsewhere/x.img"))
    assert [(g.name, path) for g, path in attachments.guests_on_pool(images)] == [
        ("eta", "/srv/images/not-listed.img"), ("zeta", web.path)]
    assert [g.name for g, _p in attachments.guests_on_pool(images, active_only=True)] == ["eta"]
    assert {path: [g.name for g in users]
            for path, users in attachments.users_by_path(images).items()} == {
        web.path: ["eta", "zeta"]}


def test_saved_memory_is_found_by_volume_by_shared_path_and_by_migration() -> None:
    a, b = host("a5"), host("b5")
    nfs_a, nfs_b = pool(a, shared=True, path="/mnt/nfs"), pool(b, shared=True, path="/mnt/nfs")
    image = volume(nfs_a, "web.save")
    web = guest(a, "web", state="shutoff")
    assert attachments.saved_memory_in(image) is None
    web.saved_volume, web.saved_path = image, image.path
    web.save(update_fields=["saved_path", "saved_volume"])
    assert attachments.saved_memory_in(image) == "web"
    assert attachments.saved_memory_in(volume(nfs_b, "web.save")) == "web"  # seen from b

    moving = guest(a, "moving")
    path = f"/mnt/nfs/.xenweb-save-{moving.uuid}.save"
    other = Volume.objects.create(pool=nfs_b, name="renamed.save", path=path)
    with migration_save(moving, path):
        assert attachments.saved_memory_in(other) == "moving"
        moving.save()  # the job saves the guest: the migration's record stays
        assert attachments.saved_memory_in(other) == "moving"
    assert attachments.saved_memory_in(other) is None
    # A save file a failed migration kept is still recognised by its name.
    kept = Volume.objects.create(pool=nfs_b, name=f".xenweb-save-{moving.uuid}.save", path=path)
    assert attachments.saved_memory_in(kept) == f"uuid {moving.uuid}"


def test_disk_exclusivity_reads_the_records() -> None:
    a = host("a6")
    images = pool(a)
    data = volume(images, "data.img")
    running = guest(a, "running", disk(data.path, "xvdb"))
    guest(a, "stopped", disk(data.path, "xvdb"), state="shutoff")
    guest(a, "reader", disk(data.path, "xvdc", readonly=True))
    guest(a, "next", next_boot=(disk(data.path, "xvdd"),))
    found = disk_conflicts([disk(data.path, "xvde")], a)
    assert sorted((c.other.name, c.other_disk) for c in found) == [
        ("next", "xvdd"), ("running", "xvdb")]
    assert disk_conflicts([disk(data.path, "xvde")], a, exclude=running)[0].other.name == "next"
    assert disk_conflicts([disk(data.path, "xvde", readonly=True)], a) == []


def test_records_of_guests_cached_before_the_records_existed() -> None:
    """The migration that introduced the records filled them for the cached guests."""
    g = guest(host("a7"), "old", disk("/srv/images/old.img"), state="paused")
    expected = rows(g)
    VolumeAttachment.objects.all().delete()
    migration = __import__("storage.migrations.0004_volume_attachments",
                           fromlist=["record_existing_guests"])
    migration.record_existing_guests(apps, None)
    assert rows(g) == expected
    VolumeAttachment.objects.all().delete()
    record(g)
    assert rows(g) == expected
