"""Guest inspection before a V2V/P2V import: what a disk image holds and whether it boots
under Xen (OS, firmware, boot loader, root device, kernel PV support, initramfs drivers).

Untrusted file systems are never mounted: the partition table is parsed in Python and
file systems are read by bounded user-space readers (e2fsprogs' debugfs, mtools). Not yet
wired into the import preview.
"""

from conversions.inspection.errors import InspectionError
from conversions.inspection.inspector import inspect_image
from conversions.inspection.result import Inspection

__all__ = ["Inspection", "InspectionError", "inspect_image"]
