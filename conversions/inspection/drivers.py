"""Disk and network drivers a converted guest may need, by module name and by the kernel
configuration symbol that builds them in."""

from __future__ import annotations

from dataclasses import dataclass

DISK = {
    "ata_piix": "CONFIG_ATA_PIIX", "ata_generic": "CONFIG_ATA_GENERIC",
    "pata_acpi": "CONFIG_PATA_ACPI", "ahci": "CONFIG_SATA_AHCI", "sd_mod": "CONFIG_BLK_DEV_SD",
    "sr_mod": "CONFIG_BLK_DEV_SR", "sym53c8xx": "CONFIG_SCSI_SYM53C8XX_2",
    "mptspi": "CONFIG_FUSION_SPI", "mptsas": "CONFIG_FUSION_SAS",
    "megaraid_sas": "CONFIG_MEGARAID_SAS", "vmw_pvscsi": "CONFIG_VMWARE_PVSCSI",
    "virtio_blk": "CONFIG_VIRTIO_BLK", "virtio_scsi": "CONFIG_SCSI_VIRTIO",
    "xen_blkfront": "CONFIG_XEN_BLKDEV_FRONTEND", "nvme": "CONFIG_BLK_DEV_NVME",
    "hv_storvsc": "CONFIG_HYPERV_STORAGE", "piix": "CONFIG_BLK_DEV_PIIX",
    "BusLogic": "CONFIG_SCSI_BUSLOGIC", "mptbase": "CONFIG_FUSION",
}
NETWORK = {
    "e1000": "CONFIG_E1000", "e1000e": "CONFIG_E1000E", "igb": "CONFIG_IGB",
    "vmxnet3": "CONFIG_VMXNET3", "virtio_net": "CONFIG_VIRTIO_NET",
    "xen_netfront": "CONFIG_XEN_NETDEV_FRONTEND", "8139cp": "CONFIG_8139CP",
    "8139too": "CONFIG_8139TOO", "pcnet32": "CONFIG_PCNET32", "ne2k_pci": "CONFIG_NE2K_PCI",
    "r8169": "CONFIG_R8169", "tg3": "CONFIG_TIGON3", "bnx2": "CONFIG_BNX2",
    "hv_netvsc": "CONFIG_HYPERV_NET",
}


def normal(name: str) -> str:
    """Module names treat '-' and '_' alike (xen-blkfront is xen_blkfront)."""
    return name.replace("-", "_")


@dataclass(frozen=True)
class Drivers:
    disk: tuple[str, ...]
    network: tuple[str, ...]
    built_in: tuple[str, ...]  # of those, the ones the kernel config builds in (=y)
    in_initramfs: tuple[str, ...]  # of those, the ones found as modules in the initramfs
    sources: tuple[str, ...]  # "initramfs", "kernel config"

    def as_dict(self) -> dict[str, object]:
        return {"disk": list(self.disk), "network": list(self.network),
                "built_in": list(self.built_in), "in_initramfs": list(self.in_initramfs),
                "sources": list(self.sources)}


def parse_config(text: str) -> dict[str, str]:
    """CONFIG_X=y/m/"..." lines of a kernel .config."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    return found


def drivers(modules: tuple[str, ...] | None, config: dict[str, str] | None) -> Drivers:
    """Group what the initramfs holds (`modules`, None if unread) and what the kernel
    builds in (`config`, None if unread) into disk and network drivers."""
    present = {normal(m) for m in modules or ()}
    disk: list[str] = []
    network: list[str] = []
    built_in: list[str] = []
    in_initramfs: list[str] = []
    for table, out in ((DISK, disk), (NETWORK, network)):
        for name, symbol in table.items():
            builtin = config is not None and config.get(symbol) == "y"
            if name in present:
                in_initramfs.append(name)
            if builtin:
                built_in.append(name)
            if name in present or builtin:
                out.append(name)
    sources = tuple(s for s, used in (("initramfs", modules is not None),
                                      ("kernel config", config is not None)) if used)
    return Drivers(tuple(disk), tuple(network), tuple(built_in), tuple(in_initramfs), sources)
