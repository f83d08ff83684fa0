"""The formats a guest can be exported to, as the guest page offers them (XVA and OVA:
the whole guest; the others: one disk). The export job accepts exactly these."""

EXPORT_FORMATS = {"xva": "XVA (XenServer / XCP-ng)", "ova": "OVA (OVF 1.0, VMDK disks)",
                  "qcow2": "One disk as qcow2", "raw": "One disk as raw",
                  "vmdk": "One disk as VMDK"}
