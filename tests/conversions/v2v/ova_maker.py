"""Builds OVAs for the tests: an OVF 1.0 envelope written from the DMTF schema, a
manifest, streamOptimized disks, packed with tarfile (OVF first, as the spec wants)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

OVF = """<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
 xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
 xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
 xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
 xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>{files}</References>
  <DiskSection><Info>disks</Info>{disks}</DiskSection>
  <NetworkSection><Info>nets</Info><Network ovf:name="VM Network"/></NetworkSection>
  <VirtualSystem ovf:id="{name}">
    <Info>vm</Info><Name>{name}</Name>
    <AnnotationSection><Info>a</Info><Annotation>from an OVA</Annotation></AnnotationSection>
    <OperatingSystemSection ovf:id="96" vmw:osType="debian10_64Guest"><Info>os</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection><Info>hw</Info>
      <Item><rasd:ElementName>cpu</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>{vcpus}</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:ElementName>mem</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{memory}</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:ElementName>scsi</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:ElementName>ide</rasd:ElementName>
        <rasd:InstanceID>4</rasd:InstanceID><rasd:ResourceType>5</rasd:ResourceType></Item>
      {disk_items}
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>cd</rasd:ElementName>
        <rasd:InstanceID>20</rasd:InstanceID><rasd:Parent>4</rasd:Parent>
        <rasd:ResourceType>15</rasd:ResourceType></Item>
      <Item><rasd:Address>00:50:56:aa:bb:01</rasd:Address><rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:Connection>VM Network</rasd:Connection><rasd:ElementName>nic</rasd:ElementName>
        <rasd:InstanceID>30</rasd:InstanceID><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType></Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""
FORMAT = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"


def ovf_text(name: str, disks: list[tuple[str, int, int]], *, vcpus: str = "2",
             memory: str = "512", compression: str = "") -> str:
    """`disks`: (file name, file size, capacity in bytes)."""
    packed = f' ovf:compression="{compression}"' if compression else ""
    files = "".join(f'<File ovf:href="{f}" ovf:id="file{i}" ovf:size="{size}"{packed}/>'
                    for i, (f, size, _c) in enumerate(disks))
    section = "".join(f'<Disk ovf:capacity="{c}" ovf:capacityAllocationUnits="byte" '
                      f'ovf:diskId="vmdisk{i}" ovf:fileRef="file{i}" ovf:format="{FORMAT}"/>'
                      for i, (_f, _s, c) in enumerate(disks))
    items = "".join(f"<Item><rasd:AddressOnParent>{i}</rasd:AddressOnParent>"
                    f"<rasd:ElementName>disk{i}</rasd:ElementName>"
                    f"<rasd:HostResource>ovf:/disk/vmdisk{i}</rasd:HostResource>"
                    f"<rasd:InstanceID>{10 + i}</rasd:InstanceID><rasd:Parent>3</rasd:Parent>"
                    f"<rasd:ResourceType>17</rasd:ResourceType></Item>"
                    for i in range(len(disks)))
    return OVF.format(files=files, disks=section, disk_items=items, name=name, vcpus=vcpus,
                      memory=memory)


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def build_ova(target: Path, name: str, disks: list[Path], *, ovf: str | None = None,
              manifest: bool = True, extra: list[tarfile.TarInfo] | None = None,
              tamper: bool = False, gzip_disks: bool = False) -> Path:
    """With `gzip_disks`, the disks are packed gzip-compressed (ovf:compression="gzip")."""
    import gzip
    import json

    from tests.conversions.v2v.conftest import qemu_img

    capacities = [json.loads(qemu_img("info", "--output=json", "-f", "vmdk", str(d)))
                  ["virtual-size"] for d in disks]
    if gzip_disks:
        packed = []
        for disk in disks:
            target_gz = disk.with_name(disk.name + ".gz")
            target_gz.write_bytes(gzip.compress(disk.read_bytes(), compresslevel=1))
            packed.append(target_gz)
        disks = packed
    sizes = [(d.name, d.stat().st_size, c) for d, c in zip(disks, capacities, strict=True)]
    text = (ovf or ovf_text(name, sizes, compression="gzip" if gzip_disks else "")).encode()
    digests = {f"{name}.ovf": hashlib.sha256(text).hexdigest()}
    for disk in disks:
        digests[disk.name] = hashlib.sha256(disk.read_bytes()).hexdigest()
    if tamper:
        digests[disks[-1].name] = "0" * 64
    with tarfile.open(target, "w", format=tarfile.USTAR_FORMAT) as tar:
        add(tar, f"{name}.ovf", text)
        if manifest:
            add(tar, f"{name}.mf", "".join(f"SHA256({n})= {d}\n"
                                           for n, d in digests.items()).encode())
        for disk in disks:
            tar.add(disk, arcname=disk.name)
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    return target
