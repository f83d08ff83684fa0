"""Inspect a source in the import area: the proposed guest, checked, before any import.

Reading a source never writes anything. Every disk image it names is checked for safety
(see vmdk, ovf, xva) here, and again by the import job, which inspects afresh.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from conversions.v2v import vmdk
from conversions.v2v.proposal import ImportRefused, Proposal, ProposedDisk
from conversions.v2v.sources import import_root, resolve_source, sibling
from conversions.v2v.vmx import MAX_VMX_BYTES, parse_vmx

DEFAULT_MEMORY_MIB = 1024


def relative(path: Path) -> str:
    return str(path.resolve().relative_to(import_root()))


def _vmx(path: Path, source: str) -> Proposal:
    if path.stat().st_size > MAX_VMX_BYTES:
        raise ImportRefused("The .vmx file is larger than 1 MiB: not a VMware configuration.")
    proposal = parse_vmx(path.read_bytes().decode("utf-8", "replace"), source=source)
    proposal.name = proposal.name or path.stem
    for disk in proposal.images:
        name = disk.source
        if posixpath.isabs(name):
            name = posixpath.basename(name)
            proposal.warnings.append(f"{disk.target}: the VMX names {disk.source}; the file "
                                     f"'{name}' beside the .vmx is imported.")
        if not name.lower().endswith(".vmdk"):
            raise ImportRefused(f"{disk.target} is '{disk.source}': only VMDK disks are "
                                "imported from a VMX.")
        facts = vmdk.check_vmdk(sibling(path.parent, name, what="disk"))
        disk.path, disk.format, disk.virtual_size = relative(facts.path), "vmdk", \
            facts.virtual_size
    if not proposal.images:
        proposal.warnings.append("The VM has no disk to import.")
    return proposal


def _vmdk(path: Path, source: str) -> Proposal:
    facts = vmdk.check_vmdk(path)
    return Proposal(
        source=source, kind="vmdk", name=path.stem, memory_mib=DEFAULT_MEMORY_MIB,
        disks=[ProposedDisk(device="disk", bus="ide", target="hda", source=path.name,
                            format="vmdk", virtual_size=facts.virtual_size,
                            path=relative(path))],
        warnings=["A lone disk: name, memory and vCPUs are defaults, adjust them."])


def inspect(source: str) -> Proposal:
    """The proposed guest for `source` (a path relative to the import area)."""
    path = resolve_source(source)
    name = path.name.lower()
    if name.endswith(".vmx"):
        proposal = _vmx(path, source)
    elif name.endswith(".vmdk"):
        proposal = _vmdk(path, source)
    elif name.endswith(".ova"):
        from conversions.v2v.ova import inspect_ova
        proposal = inspect_ova(path, source)
    elif name.endswith(".ovf"):
        from conversions.v2v.ova import inspect_ovf
        proposal = inspect_ovf(path, source)
    elif name.endswith((".xva", ".xva.gz", ".xva.zst")):
        from conversions.v2v.xva import inspect_xva
        proposal = inspect_xva(path, source)
    else:
        raise ImportRefused(f"'{source}' is not an importable file: give a .vmx, .vmdk, "
                            ".ova, .ovf or .xva (.xva.gz, .xva.zst).")
    proposal.check_limits()
    return proposal
