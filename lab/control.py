"""What the lab asks of its running libvirtds: readiness, storage pools, guest teardown.

Lab code may import libvirt (like ``hosts.virt``); the rest of the project does not.
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import libvirt
from defusedxml import ElementTree as SafeET

from hosts.virt import HostProbe, VirtError, probe
from hosts.virt.runtime import silence_libvirt_errors

T = TypeVar("T")

SHARED_POOL = "lab-shared"
LOCAL_POOL = "local"


class ControlError(RuntimeError):
    pass


def _with_timeout(fn: Callable[[], T], timeout: float, what: str) -> T:
    """``fn()`` in a daemon thread; ``ControlError`` if it is not back in ``timeout`` s."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=run, name=f"lab {what}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise ControlError(f"{what} timed out after {timeout:g} s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def _open(uri: str) -> libvirt.virConnect:
    silence_libvirt_errors()
    return libvirt.openAuth(uri, [[libvirt.VIR_CRED_AUTHNAME], lambda *_: -1, None], 0)


def wait_until_answering(uri: str, timeout: float, alive: Callable[[], bool]) -> HostProbe:
    """Probe ``uri`` until it answers; stop early when ``alive()`` turns false."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        try:
            return probe(uri, timeout=min(10.0, timeout), allow_insecure=True)
        except VirtError as exc:
            last = str(exc)
        if not alive():
            raise ControlError(f"libvirtd exited before answering at {uri} ({last})")
        if time.monotonic() >= deadline:
            raise ControlError(f"{uri} did not answer within {timeout:g} s ({last})")
        time.sleep(0.2)


@dataclass(frozen=True)
class PoolSpec:
    name: str
    path: Path


def _pool_xml(spec: PoolSpec) -> str:
    pool = ET.Element("pool", type="dir")
    ET.SubElement(pool, "name").text = spec.name
    target = ET.SubElement(pool, "target")
    ET.SubElement(target, "path").text = str(spec.path)
    return ET.tostring(pool, encoding="unicode")


def _pool_path(pool: libvirt.virStoragePool) -> str:
    root = SafeET.fromstring(pool.XMLDesc(0))
    return (root.findtext("target/path") or "").rstrip("/")


def _ensure_pool(conn: libvirt.virConnect, spec: PoolSpec) -> None:
    spec.path.mkdir(parents=True, exist_ok=True)
    try:
        pool = conn.storagePoolLookupByName(spec.name)
    except libvirt.libvirtError:
        pool = None
    if pool is not None and _pool_path(pool) != str(spec.path).rstrip("/"):
        if pool.isActive():
            pool.destroy()
        pool.undefine()
        pool = None
    if pool is None:
        pool = conn.storagePoolDefineXML(_pool_xml(spec), 0)
    if not pool.isActive():
        pool.create(0)
    if not pool.autostart():
        pool.setAutostart(1)
    pool.refresh(0)


def ensure_pools(uri: str, specs: list[PoolSpec], timeout: float = 60.0) -> None:
    """Define, start and autostart the dir pools ``specs`` on ``uri`` (idempotent)."""

    def work() -> None:
        conn = _open(uri)
        try:
            for spec in specs:
                _ensure_pool(conn, spec)
        finally:
            conn.close()

    try:
        _with_timeout(work, timeout, f"setting up the storage pools on {uri}")
    except libvirt.libvirtError as exc:
        raise ControlError(f"cannot set up the storage pools on {uri}: {exc}") from exc


def destroy_guests(uri: str, timeout: float = 60.0) -> list[str]:
    """Destroy (power off) every running guest on ``uri``; the names destroyed."""

    def work() -> list[str]:
        conn = _open(uri)
        try:
            names = []
            for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                try:
                    dom.destroy()
                    names.append(dom.name())
                except libvirt.libvirtError:
                    continue  # gone meanwhile, or wedged: the caller kills stragglers
            return names
        finally:
            conn.close()

    try:
        return _with_timeout(work, timeout, f"stopping the guests on {uri}")
    except libvirt.libvirtError as exc:
        raise ControlError(f"cannot stop the guests on {uri}: {exc}") from exc
