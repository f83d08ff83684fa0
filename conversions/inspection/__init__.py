"""Guest inspection before a V2V/P2V import: what a disk image holds and whether it boots
under Xen (OS, firmware, boot loader, root device, kernel PV support, initramfs drivers).

Untrusted file systems are never mounted: the partition table is parsed in Python and
file systems are read by bounded user-space readers (e2fsprogs' debugfs, mtools). The V2V
preview and import use it (conversions.v2v.guest_devices).
"""

from conversions.inspection.errors import DamagedImage, InspectionError
from conversions.inspection.inspector import inspect_image
from conversions.inspection.result import Inspection

__all__ = ["DamagedImage", "Inspection", "InspectionError", "inspect_image"]
