"""Xen PV support read from kernel images: the Xen ELF notes inside a bzImage's compressed
payload, the real Debian kernel among them."""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
from pathlib import Path

import pytest

from conversions.inspection.errors import InspectionError
from conversions.inspection.kernel import (
    XEN_ELFNOTE_ENTRY,
    XEN_ELFNOTE_GUEST_OS,
    XEN_ELFNOTE_PHYS32_ENTRY,
    inspect_kernel,
    read_elf,
)
from tests.conversions.inspection.diskmaker import bzimage, elf

PV_NOTES = [(b"Xen", XEN_ELFNOTE_GUEST_OS, b"linux\0"), (b"Xen", XEN_ELFNOTE_ENTRY, b"\0" * 8),
            (b"GNU", 3, b"\x01" * 20)]


def test_the_debian_kernel_runs_as_pv_and_pvh(real_kernel: Path) -> None:
    facts = inspect_kernel(real_kernel.read_bytes())
    assert (facts.arch, facts.compression, facts.xen_pv, facts.xen_pvh) == \
        ("x86_64", "xz", True, True)
    assert facts.version.endswith("-amd64")
    assert "with the PV entry point" in facts.evidence


@pytest.mark.parametrize("compress", [gzip.compress, lzma.compress,
                                      lambda d: lzma.compress(d, lzma.FORMAT_ALONE)])
def test_bzimage_payloads(compress) -> None:
    facts = inspect_kernel(bzimage(compress(elf(PV_NOTES))))
    assert (facts.version, facts.xen_pv, facts.xen_pvh) == ("6.1.0-99-amd64", True, False)


@pytest.mark.parametrize("tool", ["zstd", "lz4"])
def test_external_decompressors(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    packed = subprocess.run([tool, "-q", "-c", *(["-l"] if tool == "lz4" else [])],
                            input=elf(PV_NOTES), capture_output=True, check=True).stdout
    facts = inspect_kernel(bzimage(packed))
    assert facts.compression == tool and facts.xen_pv is True


def test_no_xen_notes_is_no_pv() -> None:
    facts = inspect_kernel(bzimage(gzip.compress(elf([(b"GNU", 3, b"x" * 20)]))))
    assert (facts.xen_pv, facts.xen_pvh) == (False, False)
    assert facts.evidence == "kernel image: no Xen ELF notes"


def test_pvh_only_kernel() -> None:
    facts = inspect_kernel(elf([(b"Xen", XEN_ELFNOTE_PHYS32_ENTRY, b"\0" * 4)], machine=3))
    assert (facts.arch, facts.compression, facts.xen_pv, facts.xen_pvh) == \
        ("i686", "none", False, True)


def test_unreadable_images_say_unknown() -> None:
    for image, why in ((bzimage(b"\x89LZO" + b"\0" * 64), "lzo"),
                       (bzimage(gzip.compress(elf(PV_NOTES)), length=1 << 30), "outside"),
                       (bzimage(gzip.compress(elf(PV_NOTES))[:40]), "headers lie outside it"),
                       (bzimage(b"\x1f\x8b" + b"\xff" * 64), "damaged"),
                       (b"MZ" + b"\0" * 4096, "not a bzImage")):
        facts = inspect_kernel(image)
        assert facts.xen_pv is None, why
        assert why in facts.evidence


def test_decompression_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("conversions.inspection.kernel.MAX_VMLINUX", 4096)
    facts = inspect_kernel(bzimage(gzip.compress(elf(PV_NOTES) + b"\0" * 100_000)))
    assert facts.xen_pv is None and "more than 4096 bytes" in facts.evidence


def test_hostile_elf_headers() -> None:
    good = bytearray(elf(PV_NOTES))
    too_many = bytearray(good)
    too_many[56:58] = (5000).to_bytes(2, "little")
    with pytest.raises(InspectionError, match="absurd number"):
        read_elf(bytes(too_many))
    outside = bytearray(good)
    outside[64 + 32:64 + 40] = (1 << 40).to_bytes(8, "little")  # p_filesz
    with pytest.raises(InspectionError, match="outside the image or is too large"):
        read_elf(bytes(outside))
    runaway = bytearray(good)
    runaway[120:124] = (1 << 20).to_bytes(4, "little")  # the first note's namesz
    with pytest.raises(InspectionError, match="runs past its segment"):
        read_elf(bytes(runaway))
