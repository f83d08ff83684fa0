"""Host capabilities instead of "is this the lab?": the migration that gives lab hosts both."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from hosts.models import Host

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

