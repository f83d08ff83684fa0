"""Debian 12 root file systems and disk images, built from Debian's packages and cached.

One builder serves the lab's Xen dom0 image (``lab/xen/image.py``) and the appliance image
(``lab/appliance/image.py``): ``debootstrap`` (minbase) into a scratch folder, packages
installed without recommends in a chroot (a ``policy-rc.d`` keeps every service from
starting on this machine), a tree of configuration files written over it, and an ext4 file
system made from the folder with ``mkfs.ext4 -d``: no loop mount.

Builds live in ``cache_dir()/<kind>/<key>/`` (outside the clone, so that CI and later runs
reuse them); the key hashes whatever the build is made from. Builders are serialised by a
lock file, and a build is renamed into place only when complete (:func:`ensure_cached`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from lab.errors import LabError
from lab.paths import cache_dir

log = logging.getLogger(__name__)

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
BUILD_TIMEOUT_S = 1800
CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "DEBIAN_FRONTEND": "noninteractive",
    "LC_ALL": "C.UTF-8",
    "HOME": "/root",
}
POLICY_RC_D = "usr/sbin/policy-rc.d"

T = TypeVar("T")


class ImageBuildError(LabError):
    """Building an image failed; the message says which step and why."""


@dataclass(frozen=True)
class Tree:
    """Files written over a root file system: contents, executables, symbolic links, units
    enabled (links under ``etc/systemd/system``) and masked."""

    files: Mapping[str, str] = field(default_factory=dict)
    executable: frozenset[str] = frozenset()
    links: Mapping[str, str] = field(default_factory=dict)
    enable: Mapping[str, str] = field(default_factory=dict)
    mask: tuple[str, ...] = ()


def run(
    args: list[str], *, step: str, timeout: float = BUILD_TIMEOUT_S,
    env: Mapping[str, str] | None = None, stdin: str | None = None,
) -> str:
    try:
        result = subprocess.run(
            args, capture_output=True, text=True, check=False, timeout=timeout,
            env=dict(env) if env is not None else None, input=stdin,
        )
    except FileNotFoundError as exc:
        raise ImageBuildError(f"{step}: {args[0]} is not installed ({exc})") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ImageBuildError(f"{step}: {exc}") from exc
    if result.returncode != 0:
        detail = " / ".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise ImageBuildError(
            f"{step}: {' '.join(args)} exited with {result.returncode}: {detail}"
        )
    return result.stdout


def in_chroot(rootfs: Path, args: list[str], *, step: str, timeout: float = BUILD_TIMEOUT_S,
              env: Mapping[str, str] | None = None) -> str:
    """Runs ``args`` inside ``rootfs`` with /proc, /sys and /dev/pts mounted in a private
    mount namespace (they go away with it, whatever happens to the command)."""
    script = (
        'set -e; r="$1"; shift; '
        'mount -t proc proc "$r/proc"; mount -t sysfs sysfs "$r/sys"; '
        'mkdir -p "$r/dev/pts"; mount -t devpts devpts "$r/dev/pts"; '
        'exec chroot "$r" "$@"'
    )
    return run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "chroot",
         str(rootfs), *args],
        step=step, timeout=timeout, env={**CHROOT_ENV, **(env or {})},
    )


def resolve_versions(packages: tuple[str, ...]) -> dict[str, str]:
    """Candidate versions of ``packages`` and of the kernel image behind
    ``linux-image-amd64``, from this machine's apt lists (the same suites as the image's)."""
    hint = "(run apt-get update?)"
    depends = run(["apt-cache", "depends", "linux-image-amd64"], step=f"apt-cache {hint}")
    kernels = re.findall(r"^\s*Depends:\s*(linux-image-\S+)\s*$", depends, re.MULTILINE)
    names = [*packages, *kernels[:1]]
    shown = run(["apt-cache", "show", "--no-all-versions", *names], step=f"apt-cache {hint}")
    versions: dict[str, str] = {}
    for stanza in shown.split("\n\n"):
        fields = dict(re.findall(r"^([\w-]+): (.*)$", stanza, re.MULTILINE))
        if "Package" in fields and "Version" in fields:
            versions[fields["Package"]] = fields["Version"]
    missing = sorted(set(names) - versions.keys())
    if missing:
        raise ImageBuildError(f"apt-cache show: no candidate for {', '.join(missing)} {hint}")
    return versions


def _source_uris() -> list[str]:
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    uris = []
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        uris += re.findall(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+)", text, re.MULTILINE)
    return [uri.rstrip("/") for uri in uris if uri.startswith(("http://", "https://"))]


def configured_mirror() -> str:
    """The machine's Debian mirror (the first non-security URI of the apt sources)."""
    for uri in _source_uris():
        if "security" not in uri and uri.endswith("/debian"):
            return uri
    return DEFAULT_MIRROR


def configured_security_mirror() -> str:
    """The machine's Debian security mirror (its apt sources' ``…-security`` URI)."""
    for uri in _source_uris():
        if uri.endswith("/debian-security"):
            return uri
    return DEFAULT_SECURITY_MIRROR


def apt_sources(mirror: str, security: str) -> str:
    """An image's sources.list: the release with its updates and security fixes, the same
    suites whose candidate versions ``resolve_versions`` reads on this machine (the key)."""
    return (
        f"deb {mirror} {SUITE} main\n"
        f"deb {mirror} {SUITE}-updates main\n"
        f"deb {security} {SUITE}-security main\n"
    )


def debootstrap(rootfs: Path, tree: Tree, *, mirror: str, security: str) -> None:
    """A minimal Debian root with ``tree`` written into it and apt pointed at the mirrors.
    ``tree`` should carry ``usr/sbin/policy-rc.d`` (no service starts during the build)."""
    debs = cache_dir() / "debootstrap"
    debs.mkdir(exist_ok=True)
    run(
        ["debootstrap", "--variant=minbase", f"--cache-dir={debs}", SUITE, str(rootfs), mirror],
        step="debootstrap",
    )
    write_tree(rootfs, tree)
    (rootfs / "etc/apt/sources.list").write_text(apt_sources(mirror, security))
    run(["chroot", str(rootfs), "apt-get", "update", "-q"], step="apt-get update in the "
        "image root", env=CHROOT_ENV)


def apt_install(rootfs: Path, packages: tuple[str, ...]) -> None:
    run(
        [
            "chroot", str(rootfs), "apt-get", "install", "-y", "-q", "--no-install-recommends",
            "-o", "Dpkg::Options::=--force-confold",
            "-o", "Dpkg::Options::=--force-confdef",
            *packages,
        ],
        step="apt-get install in the image root",
        env=CHROOT_ENV,
    )


def clean_apt(rootfs: Path) -> None:
    """No downloaded packages and no package lists (about 100 MB; apt-get update fetches
    them again) in the image."""
    run(["chroot", str(rootfs), "apt-get", "clean"], step="apt-get clean", env=CHROOT_ENV)
    for entry in (rootfs / "var/lib/apt/lists").glob("*_dists_*"):
        entry.unlink()


def write_tree(rootfs: Path, tree: Tree) -> None:
    for rel, text in tree.files.items():
        path = rootfs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if rel in tree.executable:
            path.chmod(0o755)
    units = rootfs / "etc/systemd/system"
    for rel, target in tree.enable.items():
        link = units / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(target)
    for unit in tree.mask:
        link = units / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    for rel, target in tree.links.items():
        link = rootfs / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(target)


def used_mib(rootfs: Path) -> int:
    return int(run(["du", "-sxm", str(rootfs)], step="du").split()[0])


def make_ext4(rootfs: Path, disk: Path, *, label: str, size_mib: int,
              uuid: str | None = None) -> None:
    """An ext4 file system of ``size_mib`` holding ``rootfs`` (a sparse file)."""
    disk.unlink(missing_ok=True)
    with disk.open("wb") as handle:
        handle.truncate(size_mib * 1024 * 1024)
    run(
        ["mkfs.ext4", "-q", "-F", "-L", label, *(["-U", uuid] if uuid else []),
         "-d", str(rootfs), str(disk)],
        step="mkfs.ext4 -d",
    )


def cache_key(*parts: object) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_cached(
    root: Path, key: str, *, complete: Callable[[Path], T | None],
    build: Callable[[Path, Path], None], what: str, prune: bool = True,
) -> T:
    """The build ``root/key`` (``complete(out)`` says whether a folder is a whole build),
    made by ``build(staged, scratch)`` if missing: ``staged`` becomes ``root/key`` when the
    build returns, ``scratch`` goes away. Process-safe: a second caller waits for the first
    one's build and reuses it. With ``prune``, other builds in ``root`` are removed after."""
    root.mkdir(parents=True, exist_ok=True)
    out = root / key
    found = complete(out)
    if found is not None:
        return found
    with locked(root / ".lock"):
        found = complete(out)  # built by another process meanwhile?
        if found is not None:
            return found
        for leftover in root.glob(".build-*"):
            shutil.rmtree(leftover, ignore_errors=True)  # from a builder that died
        shutil.rmtree(out, ignore_errors=True)
        scratch = root / f".build-{key}-{os.getpid()}"
        scratch.mkdir()
        began = time.monotonic()
        try:
            staged = scratch / "out"
            staged.mkdir()
            build(staged, scratch)
            os.replace(staged, out)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        log.info("%s built in %.0f s: %s", what, time.monotonic() - began, out)
        found = complete(out)
        if found is None:
            raise ImageBuildError(f"the {what} in {out} is incomplete after the build")
        if prune:
            for entry in root.iterdir():
                if entry.is_dir() and entry != out and not entry.name.startswith("."):
                    log.info("removing the outdated %s %s", what, entry)
                    shutil.rmtree(entry, ignore_errors=True)
        return found


def newest(root: Path, complete: Callable[[Path], T | None]) -> T | None:
    """The most recent complete build in ``root`` (when the key cannot be computed)."""
    if not root.is_dir():
        return None
    builds = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for out in builds:
        found = complete(out)
        if found is not None:
            return found
    return None
