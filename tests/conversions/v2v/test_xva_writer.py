"""The XVA writer on sparse files (holes skipped without reading), plain and compressed,
checked by the spec-written checker of test_export_lab."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest
import zstandard

from conversions.v2v.xva_writer import ExportDisk, ExportVm, TarStream, write_xva
from tests.conversions.v2v.conftest import MIB, patterned_raw
from tests.conversions.v2v.test_export_lab import check_xva


@pytest.mark.parametrize("compress", ["", "gzip", "zstd"])
def test_sparse_disks_written_by_the_rules(tmp_path: Path, compress: str) -> None:
    raws = [patterned_raw(tmp_path / "a.raw", 9 * MIB), patterned_raw(tmp_path / "b.raw",
                                                                      2 * MIB + 512)]
    vm = ExportVm(name="w", vcpus=3, memory_mib=300,
                  disks=[ExportDisk(str(r), r.stat().st_size) for r in raws],
                  macs=["02:00:00:00:00:01"])
    seen: list[int] = []
    target = tmp_path / "w.xva"
    write_xva(vm, target, compress=compress, on_bytes=seen.append)
    assert sum(seen) == 11 * MIB + 512  # every byte counted, holes included
    data = target.read_bytes()
    if compress == "gzip":
        data = gzip.decompress(data)
    elif compress == "zstd":
        data = zstandard.ZstdDecompressor().stream_reader(data).read()
    disks = check_xva(data)
    assert [disks[ref] for ref in sorted(disks)] == [r.read_bytes() for r in raws]


def test_tar_stream_writes_what_tarfile_writes() -> None:
    members = [("ova.xml", b"<value/>"), ("Ref:100/00000000", os.urandom(MIB)),
               ("Ref:100/00000000.xxhash", b"0123456789abcdef"), ("odd", b"x" * 513)]
    expected = io.BytesIO()
    with tarfile.open(fileobj=expected, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    written = io.BytesIO()
    stream = TarStream(written, mtime=1_700_000_000)
    for name, data in members:
        stream.add(name, data)
    stream.close()
    assert written.getvalue() == expected.getvalue()
