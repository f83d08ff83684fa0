"""Host capabilities instead of "is this the lab?": the migration that gives lab hosts both,
and enrolment, which stores them as given (``is_lab`` alone grants nothing)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from hosts.models import Host
from hosts.services import enrol_host
from hosts.virt import VirtError, demo_uri
from hosts.virt.connection import drop_connection

BEFORE = ("hosts", "0005_host_boot_files_dir")
AFTER = ("hosts", "0006_host_capabilities")


@pytest.fixture
def before_the_capabilities(transactional_db: Any) -> Iterator[Any]:
    """The database as it was before 0006, then migrated back to the latest state."""
    executor = MigrationExecutor(connection)
    executor.migrate([BEFORE])
    yield executor.loader.project_state([BEFORE]).apps
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_the_migration_gives_lab_hosts_both_capabilities_and_others_none(
        before_the_capabilities: Any) -> None:
    OldHost = before_the_capabilities.get_model("hosts", "Host")
    lab = OldHost.objects.create(name="lab1", uri="qemu+tcp://127.0.0.1:16600/system",
                                 is_lab=True)
    real = OldHost.objects.create(name="dom0", uri="xen+ssh://root@dom0.example/system")
    MigrationExecutor(connection).migrate([AFTER])
    rows = Host.objects.values_list("is_lab", "allow_insecure_transport", "files_local")
    assert rows.get(pk=lab.pk) == (True, True, True)
    assert rows.get(pk=real.pk) == (False, False, False)


@pytest.fixture
def fresh_demo() -> Iterator[str]:
    drop_connection(demo_uri())
    yield demo_uri()
    drop_connection(demo_uri())


@pytest.mark.django_db
def test_enrolment_stores_the_capabilities_it_is_given(fresh_demo: str) -> None:
    host = enrol_host(name="d", uri=fresh_demo, user=None, allow_insecure_transport=True,
                      files_local=False)
    host.refresh_from_db()
    assert (host.is_lab, host.allow_insecure_transport, host.files_local) == (False, True, False)


@pytest.mark.django_db
def test_a_lab_flag_alone_grants_no_capability(fresh_demo: str) -> None:
    host = enrol_host(name="d", uri=fresh_demo, user=None, is_lab=True)
    host.refresh_from_db()
    assert host.is_lab and not host.allow_insecure_transport and not host.files_local


@pytest.mark.django_db
def test_an_insecure_uri_needs_the_transport_capability_not_the_lab_flag() -> None:
    uri = "qemu+tcp://127.0.0.1:1/system"
    for refused in ({"is_lab": True}, {"is_lab": True, "files_local": True}):
        with pytest.raises(VirtError, match="unauthenticated, unencrypted transport"):
            enrol_host(name="lab1", uri=uri, user=None, **refused)
    assert not Host.objects.exists()
