"""The text edits of a guest conversion, as pure functions: disk device names on the target
(``/dev/sda2`` becomes ``UUID=...`` on the converted disk, ``/dev/xvdb1`` on the others) in
fstab and on kernel command lines, and the target's console added to the command lines.

Each function returns the new text and what it changed, in words for the job log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DEVICE = re.compile(r"/dev/(?P<prefix>xvd|sd|hd|vd)(?P<disk>[a-z]{1,3})(?P<part>\d*)")
RENAMED_ARGS = ("root", "resume")
APPEND = re.compile(r"^(?P<head>\s*append\s+)(?P<args>.*)$", re.IGNORECASE)
GRUB2_LINUX = re.compile(r"^(?P<head>\s*(?:linux|linux16|linuxefi)\s+\S+)(?P<args>.*)$")
GRUB_LEGACY_KERNEL = re.compile(r"^(?P<head>\s*kernel\s+\S+)(?P<args>.*)$")
GRUB_LEGACY_KOPT = re.compile(r"^(?P<head>#\s*kopt=)(?P<args>.*)$")
DEFAULT_GRUB = re.compile(r'^(?P<head>GRUB_CMDLINE_LINUX=")(?P<args>[^"]*)(?P<tail>".*)$')


@dataclass(frozen=True)
class Renaming:
    """How the guest's disks are named on the target.

    `old_prefixes`: the names that change (``sd``, ``hd``); `new_prefix`: what the guest sees
    instead (``xvd``); `first_disk`: the converted disk's partitions by number (0: a file
    system on the whole disk) to how they are named from now on (``UUID=...``); `console`:
    the console the kernel must print on (``hvc0``), "" to leave the consoles as they are.
    """

    old_prefixes: tuple[str, ...]
    new_prefix: str
    first_disk: dict[int, str] = field(default_factory=dict)
    console: str = ""

    def spec(self, spec: str) -> str:
        """`spec` as the target must name it (unchanged when it names no renamed disk)."""
        found = DEVICE.fullmatch(spec)
        if found is None or found["prefix"] not in self.old_prefixes:
            return spec
        number = int(found["part"] or 0)
        if found["disk"] == "a" and number in self.first_disk:
            return self.first_disk[number]
        return f"/dev/{self.new_prefix}{found['disk']}{found['part']}"

    def cmdline(self, args: str) -> tuple[str, list[str]]:
        """A kernel command line with its root= and resume= renamed and the console added."""
        tokens = args.split()
        changes: list[str] = []
        for index, token in enumerate(tokens):
            key, sep, value = token.partition("=")
            if sep and key in RENAMED_ARGS and (new := self.spec(value)) != value:
                tokens[index] = f"{key}={new}"
                changes.append(f"{token} → {tokens[index]}")
        if self.console and f"console={self.console}" not in tokens:
            # the last console= is where /dev/console (init's output) goes
            tokens.append(f"console={self.console}")
            changes.append(f"console={self.console} added")
        if not changes:
            return args, []
        leading = args[: len(args) - len(args.lstrip())]
        return leading + " ".join(tokens), changes


def _edit_lines(text: str, pattern: re.Pattern[str],
                renaming: Renaming) -> tuple[str, list[str]]:
    lines = text.splitlines(keepends=True)
    changes: list[str] = []
    for number, line in enumerate(lines):
        body = line.rstrip("\r\n")
        found = pattern.match(body)
        if found is None:
            continue
        args, changed = renaming.cmdline(found["args"])
        if changed:
            head, tail = found["head"], found.groupdict().get("tail") or ""
            gap = "" if head[-1:].isspace() or head.endswith(("=", '"')) or \
                args[:1].isspace() else " "
            lines[number] = f"{head}{gap}{args}{tail}{line[len(body):]}"
            changes.extend(changed)
    return "".join(lines), changes


def rewrite_fstab(text: str, renaming: Renaming) -> tuple[str, list[str]]:
    """fstab with every renamed device's entry naming it as the target must."""
    lines = text.splitlines(keepends=True)
    changes: list[str] = []
    for number, line in enumerate(lines):
        found = re.match(r"^(\s*)(\S+)(.*)$", line, re.DOTALL)
        if found is None or found[2].startswith("#"):
            continue
        new = renaming.spec(found[2])
        if new != found[2]:
            lines[number] = f"{found[1]}{new}{found[3]}"
            changes.append(f"{found[2]} → {new}")
    return "".join(lines), changes


def rewrite_boot_config(kind: str, text: str, renaming: Renaming) -> tuple[str, list[str]]:
    """A boot loader configuration (inspection's kind) with its kernel command lines
    converted; ValueError for a kind this does not edit."""
    if kind in ("extlinux", "syslinux"):
        return _edit_lines(text, APPEND, renaming)
    if kind == "grub2":
        return _edit_lines(text, GRUB2_LINUX, renaming)
    if kind == "grub-legacy":
        text, changes = _edit_lines(text, GRUB_LEGACY_KERNEL, renaming)
        text, more = _edit_lines(text, GRUB_LEGACY_KOPT, renaming)  # update-grub's defaults
        return text, changes + more
    raise ValueError(f"the boot loader {kind or '(none)'} is not one the conversion edits")


def rewrite_default_grub(text: str, renaming: Renaming) -> tuple[str, list[str]]:
    """/etc/default/grub: the console on GRUB_CMDLINE_LINUX, so that the next
    update-grub keeps it (update-grub names the root by UUID itself)."""
    console_only = Renaming((), renaming.new_prefix, console=renaming.console)
    return _edit_lines(text, DEFAULT_GRUB, console_only)
