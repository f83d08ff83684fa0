"""Which boot loader wrote the MBR's boot code (its first 440 bytes), by the strings and
signatures each one carries."""

from __future__ import annotations


def mbr_boot_code(sector: bytes) -> str:
    """"grub", "syslinux", "syslinux-gpt", "lilo", "windows", "freebsd", "empty" or "unknown"."""
    code = sector[:440]
    if not code.strip(b"\0"):
        return "empty"
    if b"GRUB" in code and b"Geom" in code:
        return "grub"
    if code[6:10] == b"LILO" or b"LILO" in code:
        return "lilo"
    if b"Missing operating system." in code and b"Multiple active partitions." in code:
        return "syslinux"
    if b"!GPT" in code and b"Disk error" in code:
        return "syslinux-gpt"
    if b"Invalid partition table" in code and b"operating system" in code:
        return "windows"
    if b"Missing operating system" in code and b"Error loading operating system" in code:
        return "windows"
    if b"FreeBSD" in code or b"boot0" in code:
        return "freebsd"
    return "unknown"
