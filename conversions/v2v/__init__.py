"""V2V: importing VMware (VMX/VMDK), OVA/OVF and XVA images as guests.

Parsers (vmx, vmdk, ovf, xva) turn untrusted files into a `Proposal` (proposal.py);
`inspect` picks the parser for a source under the import area (sources.py);
`import_job` converts the disks with qemu-img (qemu.py) and defines the guest.
"""
