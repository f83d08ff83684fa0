"""What a failed Xen test leaves in its report: the dom0s' own view of why.

libvirt says only "libxenlight failed to create new domain"; the reason is in libxl's logs,
in Xen's free memory and domain list, and on the serial console (Xen's and dom0's kernel
messages). A CI run keeps nothing but its output, so a failure carries these with it.
"""

from __future__ import annotations

import re

from hosts.virt.domain_xml import PV, DomainSpec, build_domain_xml
from lab.errors import LabError
from lab.xen.manager import TINY_GUEST_INITRD, TINY_GUEST_KERNEL, XenHost
from lab.xen.remote import run_on

COMMAND_TIMEOUT_S = 45.0
CONSOLE_TAIL_LINES = 40
# systemd's coloured status lines on the serial console
TERMINAL_CONTROL = re.compile(r"\x1b(\[[0-9;]*[A-Za-z]|[A-Z])|\r")
# One shell script, so a report costs one SSH session per dom0 (slow under TCG).
DOM0_SCRIPT = r"""
echo '$ xl list'; xl list 2>&1
echo '$ xl info (memory)'; xl info 2>&1 | grep -E '^(total|free)_memory|^free_cpus'
echo '$ df -h / /var/lib/libvirt'; df -h / /var/lib/libvirt 2>&1
echo '$ tail libxl-driver.log'; tail -n 30 /var/log/libvirt/libxl/libxl-driver.log 2>&1
latest=$(ls -t /var/log/libvirt/libxl/*.log 2>/dev/null | grep -v -e libxl-driver -e Domain-0 \
  | head -n 1)
if [ -n "$latest" ]; then echo "\$ tail $latest"; tail -n 40 "$latest"; fi
xen_logs=$(ls /var/log/xen/*.log 2>/dev/null | grep -v xenstored-access)
if [ -n "$xen_logs" ]; then echo '$ tail /var/log/xen'; tail -n 8 $xen_logs 2>&1 | tail -n 30; fi
echo '$ dmesg (last lines)'; dmesg 2>&1 | tail -n 20
"""


def _console_tail(host: XenHost) -> str:
    try:
        text = host.console_log.read_text(errors="replace")
    except OSError as exc:
        return f"(no console log: {exc})"
    lines = [line for line in TERMINAL_CONTROL.sub("", text).splitlines() if line.strip()]
    return "\n".join(lines[-CONSOLE_TAIL_LINES:])


def dom0_report(host: XenHost) -> str:
    """The dom0's domains, free memory, disk space, libxl's and the kernel's last words and
    the tail of its serial console; a dom0 that does not answer says so instead."""
    try:
        result = run_on(host, ["sh", "-c", DOM0_SCRIPT], timeout=COMMAND_TIMEOUT_S,
                        check=False)
        remote = (result.stdout + result.stderr).strip()
    except LabError as exc:
        remote = f"(the dom0 did not answer: {exc})"
    return (f"== {host.name} ({host.uri})\n{remote}\n"
            f"== {host.name} serial console (last {CONSOLE_TAIL_LINES} lines)\n"
            f"{_console_tail(host)}")


CANARY = "xenweb-canary"
CANARY_TIMEOUT_S = 120.0
# As much as the tests' own tiny guests: with 64 MiB libxl refused the tiny guest's kernel
# and initrd ("segment kernel too large"), so the canary failed on every healthy dom0.
CANARY_MEMORY_MIB = 192
# A transient PV domain straight through dom0's own libvirt (the tiny guest's kernel, no
# disk, no NIC; the XML is the app's own): what every Xen test needs the dom0 to be able to do.
CANARY_SCRIPT = f"""
virsh -q -c xen:///system destroy {CANARY} >/dev/null 2>&1
cat > /tmp/{CANARY}.xml || exit 2
virsh -q -c xen:///system create /tmp/{CANARY}.xml; rc=$?
virsh -q -c xen:///system destroy {CANARY} >/dev/null 2>&1
exit $rc
"""


def canary_xml() -> str:
    return build_domain_xml(DomainSpec(
        name=CANARY, domain_type="xen", os_type=PV, memory_mib=CANARY_MEMORY_MIB,
        kernel=TINY_GUEST_KERNEL, initrd=TINY_GUEST_INITRD,
    ))


def cannot_create_domains(host: XenHost) -> str | None:
    """Why the dom0 cannot start a domain now (``None`` when it can)."""
    try:
        result = run_on(host, ["sh", "-c", CANARY_SCRIPT], timeout=CANARY_TIMEOUT_S,
                        check=False, stdin=canary_xml())
    except LabError as exc:
        return f"the canary domain did not start: {exc}"
    if result.returncode != 0:
        return f"the canary domain did not start: {(result.stderr or result.stdout).strip()}"
    return None
