"""The lab's Xen hypervisor: Debian's Xen 4.17, rebuilt with shadow paging.

Debian 12 builds Xen without ``CONFIG_SHADOW_PAGING``. A PV guest's live migration needs
it (the hypervisor tracks the guest's dirty pages in log-dirty mode, which for PV guests is
shadow paging), and HVM guests, which could use hardware paging instead, cannot run under
TCG at all. So that the lab can show live migration between two real Xen hosts, the image
builder compiles the hypervisor from Debian's own source package, with the configuration
of Debian's binary plus ``CONFIG_SHADOW_PAGING=y``. Nothing else differs from Debian's Xen:
the dom0 keeps Debian's toolstack and libvirt. An operator on stock Debian 12 gets the
app's explanation instead (guests.migration.job).

The source is the Debian archive's (the security archive first, for the version the dom0
installs), checked against the SHA-256 of the suite's ``Sources`` index. The tools and
the hypervisor then belong to the same stable branch, whose hypercall interface does not
change between point releases.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from lab.errors import LabError

SOURCE_PACKAGE = "xen"
BRANCH = "4.17."
SHADOW_OPTION = "CONFIG_SHADOW_PAGING"
DOWNLOAD_TIMEOUT_S = 120
BUILD_TIMEOUT_S = 3600
# What the build needs besides a C toolchain (scripts/bootstrap.sh installs them).
BUILD_TOOLS = ("make", "gcc", "flex", "bison", "python3")


class HypervisorBuildError(LabError):
    """Building the lab's hypervisor failed; the message says which step and why."""


@dataclass(frozen=True)
class SourcePackage:
    version: str
    url: str
    sha256: str


def parse_sources(index: str, mirror: str) -> list[SourcePackage]:
    """The 4.17 ``xen`` source packages of a ``Sources`` index, each with the address and
    SHA-256 of its upstream tarball."""
    found = []
    for stanza in index.split("\n\n"):
        if not re.search(rf"^Package: {SOURCE_PACKAGE}$", stanza, re.MULTILINE):
            continue
        version = re.search(r"^Version: (\S+)$", stanza, re.MULTILINE)
        directory = re.search(r"^Directory: (\S+)$", stanza, re.MULTILINE)
        sums = re.search(r"^Checksums-Sha256:\n((?: .*\n?)+)", stanza, re.MULTILINE)
        if not (version and directory and sums) or not version[1].startswith(BRANCH):
            continue
        for line in sums[1].splitlines():
            digest, _size, name = line.split()
            if name.endswith(".orig.tar.xz") or name.endswith(".orig.tar.gz"):
                url = f"{mirror}/{directory[1]}/{name}".replace("+", "%2B")
                found.append(SourcePackage(version[1], url, digest))
    return found


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310
        return response.read()


def source_candidates(mirror: str, security: str, suite: str) -> list[SourcePackage]:
    """Xen 4.17 sources, the security archive's first (the dom0's tools come from there)."""
    candidates: list[SourcePackage] = []
    for base, dist in ((security, f"{suite}-security"), (mirror, suite)):
        try:
            index = lzma.decompress(_fetch(f"{base}/dists/{dist}/main/source/Sources.xz"))
        except (OSError, urllib.error.URLError, lzma.LZMAError):
            continue
        candidates += parse_sources(index.decode("utf-8", "replace"), base)
    return candidates


def download_source(candidates: list[SourcePackage], into: Path) -> tuple[SourcePackage, Path]:
    """The first candidate whose tarball downloads and matches its checksum."""
    problems = []
    for source in candidates:
        try:
            data = _fetch(source.url)
        except (OSError, urllib.error.URLError) as exc:
            problems.append(f"{source.url}: {exc}")
            continue
        if hashlib.sha256(data).hexdigest() != source.sha256:
            problems.append(f"{source.url}: checksum mismatch")
            continue
        path = into / source.url.rsplit("/", 1)[1].replace("%2B", "+")
        path.write_bytes(data)
        return source, path
    raise HypervisorBuildError(
        "no Xen 4.17 source package could be downloaded: " + ("; ".join(problems) or
                                                               "none in the Sources indexes"))


def shadow_config(debian_config: str) -> str:
    """Debian's hypervisor configuration with shadow paging switched on."""
    lines = [line for line in debian_config.splitlines()
             if not re.match(rf"^(# )?{SHADOW_OPTION}[= ]", line)]
    return "\n".join([*lines, f"{SHADOW_OPTION}=y", ""])


def _run(args: list[str], *, cwd: Path, step: str) -> None:
    try:
        result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False,
                                timeout=BUILD_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HypervisorBuildError(f"{step}: {exc}") from exc
    if result.returncode != 0:
        detail = " / ".join((result.stderr or result.stdout).strip().splitlines()[-6:])
        raise HypervisorBuildError(f"{step}: {' '.join(args)} exited with "
                                   f"{result.returncode}: {detail}")


def missing_tools() -> list[str]:
    return [tool for tool in BUILD_TOOLS if shutil.which(tool) is None]


def build_hypervisor(debian_config: Path, out: Path, scratch: Path, *, mirror: str,
                     security: str, suite: str) -> dict[str, str | bool]:
    """Build the multiboot ``xen`` image into ``out``; returns what went into it. The
    configuration used replaces ``debian_config`` (the dom0's ``/boot/xen-*.config`` then
    describes the hypervisor it runs on)."""
    missing = missing_tools()
    if missing:
        raise HypervisorBuildError(f"building Xen needs {', '.join(missing)} "
                                   "(make deps installs them)")
    scratch.mkdir(parents=True, exist_ok=True)
    source, tarball = download_source(source_candidates(mirror, security, suite), scratch)
    _run(["tar", "-xf", str(tarball), "-C", str(scratch)], cwd=scratch, step="unpacking Xen")
    trees = [p for p in scratch.iterdir() if p.is_dir() and (p / "xen" / "Makefile").is_file()]
    if not trees:
        raise HypervisorBuildError(f"no Xen source tree in {tarball.name}")
    xen_dir = trees[0] / "xen"
    (xen_dir / ".config").write_text(shadow_config(debian_config.read_text()))
    _run(["make", "olddefconfig"], cwd=xen_dir, step="configuring Xen")
    if f"{SHADOW_OPTION}=y" not in (xen_dir / ".config").read_text().splitlines():
        raise HypervisorBuildError(f"Xen's configuration dropped {SHADOW_OPTION}")
    _run(["make", f"-j{os.cpu_count() or 1}"], cwd=xen_dir, step="building Xen")
    shutil.copyfile(xen_dir / "xen", out)
    shutil.copyfile(xen_dir / ".config", debian_config)
    return {"source": source.version, "shadow_paging": True}
