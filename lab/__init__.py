"""The local lab: libvirt/QEMU hosts in network namespaces and real Xen dom0s under QEMU.

For demos, tests and benchmarks; not part of the installed appliance, which never imports it.
Run it from the repository root: ``python -m lab up --register`` (see ``lab/cli.py``).
"""
