"""Pool XML per type (built and parsed with ElementTree) and shared-storage keys.

No libvirt needed: NFS and LVM cannot run on this machine (no NFS server, no
device-mapper), so their XML and the recognition of the same storage are checked here,
against XML as libvirt writes it back.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from defusedxml import ElementTree as SafeET

from hosts.virt import pool_xml as px
from storage.sharing import normal_host, normal_path, storage_key


def parsed(xml: str) -> ET.Element:
    return SafeET.fromstring(xml)


def test_dir_and_fs_xml() -> None:
    root = parsed(px.build_pool_xml(px.DirPoolSpec(name="images", target_path="/srv/images")))
    assert root.get("type") == "dir" and root.findtext("name") == "images"
    assert root.findtext("target/path") == "/srv/images" and root.find("source") is None

    fs = parsed(px.build_pool_xml(px.FsPoolSpec(name="gfs", device="/dev/mapper/san1",
                                                target_path="/cluster/vm", format="gfs2")))
    assert fs.find("source/device").get("path") == "/dev/mapper/san1"
    assert fs.find("source/format").get("type") == "gfs2"


def test_netfs_logical_iscsi_xml() -> None:
    nfs = parsed(px.build_pool_xml(px.NetfsPoolSpec(
        name="nfs", source_host="nas.example.org", source_dir="/export/vm",
        target_path="/mnt/nfs")))
    assert nfs.get("type") == "netfs"
    assert nfs.find("source/host").get("name") == "nas.example.org"
    assert nfs.find("source/dir").get("path") == "/export/vm"
    assert nfs.find("source/format").get("type") == "nfs"

    lvm = parsed(px.build_pool_xml(px.LogicalPoolSpec(name="vg", vg_name="vmvg",
                                                      devices=("/dev/sdb", "/dev/sdc"))))
    assert [d.get("path") for d in lvm.findall("source/device")] == ["/dev/sdb", "/dev/sdc"]
    assert lvm.findtext("source/name") == "vmvg" and lvm.findtext("target/path") == "/dev/vmvg"

    iscsi = parsed(px.build_pool_xml(px.IscsiPoolSpec(
        name="san", source_host="san.example.org", target_iqn="iqn.2024-01.org.example:t1",
        initiator_iqn="iqn.2024-01.org.example:host1")))
    assert iscsi.find("source/host").get("port") == "3260"
    assert iscsi.find("source/device").get("path") == "iqn.2024-01.org.example:t1"
    assert iscsi.find("source/initiator/iqn").get("name") == "iqn.2024-01.org.example:host1"
    assert iscsi.findtext("target/path") == "/dev/disk/by-path"


@pytest.mark.parametrize(("spec", "message"), [
    (px.DirPoolSpec(name="x y", target_path="/srv"), "not a valid pool name"),
    (px.DirPoolSpec(name="ok", target_path="relative/dir"), "absolute path"),
    (px.DirPoolSpec(name="ok", target_path="/srv/../etc"), "absolute path"),
    (px.NetfsPoolSpec(name="n", source_host="", source_dir="/e", target_path="/m"),
     "NFS server"),
    (px.NetfsPoolSpec(name="n", source_host="nas;rm", source_dir="/e", target_path="/m"),
     "NFS server"),
    (px.NetfsPoolSpec(name="n", source_host="nas", source_dir="e", target_path="/m"),
     "exported directory"),
    (px.NetfsPoolSpec(name="n", source_host="nas", source_dir="/e", target_path="/m",
                      format="ftp"), "Unknown network filesystem"),
    (px.FsPoolSpec(name="f", device="/dev/sdb", target_path="/m", format="ntfs-3g"),
     "Unknown filesystem"),
    (px.LogicalPoolSpec(name="v", vg_name="bad/vg"), "volume group name"),
    (px.LogicalPoolSpec(name="v", vg_name="vg", devices=("/dev/sdb", "/dev/sdb")), "twice"),
    (px.IscsiPoolSpec(name="i", source_host="san", target_iqn="not-an-iqn"),
     "iSCSI target name"),
    (px.IscsiPoolSpec(name="i", source_host="san", target_iqn="iqn.2024-01.org.x:t",
                      port=0), "port"),
])
def test_bad_specs_are_refused_with_a_clear_message(spec: px.PoolSpec, message: str) -> None:
    with pytest.raises(px.PoolSpecError, match=message):
        px.build_pool_xml(spec)


# XML as libvirt writes it back for pools defined on two different hosts.
NFS_HOST1 = """<pool type='netfs'><name>vmstore</name><uuid>1</uuid>
  <source><host name='NAS.Example.org.'/><dir path='/export//vm/'/><format type='auto'/></source>
  <target><path>/mnt/vmstore</path></target></pool>"""
NFS_HOST2 = """<pool type='netfs'><name>nfs-vm</name><uuid>2</uuid>
  <source><host name='nas.example.org'/><dir path='/export/vm'/><format type='nfs'/></source>
  <target><path>/var/lib/xen/nfs</path></target></pool>"""
NFS_OTHER = """<pool type='netfs'><name>other</name>
  <source><host name='nas.example.org'/><dir path='/export/backup'/></source>
  <target><path>/mnt/b</path></target></pool>"""
ISCSI_1 = """<pool type='iscsi'><name>san</name>
  <source><host name='SAN.example.org'/><device path='iqn.2024-01.org.example:Store.LUNS'/>
  </source><target><path>/dev/disk/by-path</path></target></pool>"""
ISCSI_2 = """<pool type='iscsi'><name>san-b</name>
  <source><host name='san.example.org' port='3260'/>
  <device path='iqn.2024-01.org.example:store.luns'/>
  <initiator><iqn name='iqn.2024-01.org.example:host2'/></initiator></source>
  <target><path>/dev/disk/by-path</path></target></pool>"""
LVM_1 = """<pool type='logical'><name>vg</name><source><device path='/dev/sdc'/>
  <device path='/dev/sdb'/><name>sharedvg</name><format type='lvm2'/></source>
  <target><path>/dev/sharedvg</path></target></pool>"""
LVM_2 = """<pool type='logical'><name>vg2</name><source><device path='/dev/sdb'/>
  <device path='/dev/sdc'/><name>sharedvg</name><format type='lvm2'/></source>
  <target><path>/dev/sharedvg</path></target></pool>"""


def key(xml: str) -> str:
    return storage_key(px.parse_pool_source(xml))


def test_the_same_nfs_export_spelled_differently_has_one_key() -> None:
    assert key(NFS_HOST1) == key(NFS_HOST2) == "nfs:nas.example.org:/export/vm"
    assert key(NFS_OTHER) != key(NFS_HOST1)


def test_the_same_iscsi_target_and_lvm_group_have_one_key() -> None:
    assert key(ISCSI_1) == key(ISCSI_2) == \
        "iscsi:san.example.org:3260:iqn.2024-01.org.example:store.luns"
    assert key(LVM_1) == key(LVM_2) == "lvm:sharedvg:/dev/sdb,/dev/sdc"


def test_parse_source_and_normalisers() -> None:
    source = px.parse_pool_source(ISCSI_2)
    assert source.hosts == (("san.example.org", 3260),)
    assert source.initiator == "iqn.2024-01.org.example:host2"
    assert source.as_dict()["hosts"] == ["san.example.org:3260"]
    assert normal_host("[FE80::1]") == "fe80::1" and normal_host("Nas.") == "nas"
    assert normal_path("/a//b/./c/") == "/a/b/c" and normal_path("/") == "/"
    dir_pool = "<pool type='dir'><name>d</name><target><path>/srv/x/</path></target></pool>"
    assert key(dir_pool) == "path:/srv/x"
    assert key("<pool type='scsi'><name>s</name><source><adapter name='host0'/></source>"
               "</pool>") == ""
