"""Real Xen 4.17 dom0s for the lab, booted under QEMU (TCG): see ``manager.py``."""
