"""Moved to storage.bootfiles (the boot files directory is served as a storage pool).

Only the lab (hosts/lab/bootfiles.py, hosts/lab/xen/register.py, moving to lab/ on another
branch) still imports this name: once it imports storage.bootfiles, delete this module,
which is the one import of hosts from above it.
"""

from storage.bootfiles import refresh_boot_files, set_boot_files_dir

__all__ = ["refresh_boot_files", "set_boot_files_dir"]
