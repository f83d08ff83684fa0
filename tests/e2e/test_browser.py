"""The appliance in a real browser, the way an operator meets it: the first-boot wizard with
the setup token, login, the dashboard, a guest created and started on the demo host, the text
console of a lab host's tiny guest printing its boot, a long job's progress bar advancing
without a reload, the migration dialog's preflight checks between two lab hosts, logout.

With XENWEB_SCREENSHOT_DIR set, the main pages are saved there as PNG (`make screenshots`).
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from guests.inventory import reconcile_host
from guests.models import Guest
from hosts.models import Host
from hosts.virt import VirtError, VirtTarget
from hosts.virt import domains as virt
from inventory.monitor import refresh_host
from lab.daemons import lab_up
from lab.register import register_lab_host
from lab.tinyguest import TINY_GUEST_BANNER, TINY_GUEST_TICK
from tests.e2e.conftest import SCREENSHOT_DIR
from tests.lab.test_console_ws import tiny_spec
from tests.live.processes import WebServer, wait_for
from xenweb.alerts.models import Alert

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True),
              pytest.mark.timeout(900)]

ADMIN = "e2e-admin"
PASSWORD = "Browser-tested-passphrase-7"
STEP_MS = 45_000
BOOT_MS = 150_000


def off_loop(func: Any, *args: Any) -> Any:
    """Run ORM or libvirt code outside the thread where Playwright's event loop lives
    (Django refuses synchronous queries from a thread with a running loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(func, *args).result()


def shot(page: Any, name: str) -> None:
    """Checked on every main page: no template syntax leaks into it (a multi-line {# #})."""
    text = page.locator("body").inner_text()
    assert not re.search(r"\{[#%{]", text), f"template syntax on {page.url}"
    if SCREENSHOT_DIR:
        Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / f"{name}.png"))


def select_by_text(page: Any, select: str, name: str) -> None:
    """Choose the option whose label is `name`, or starts with it and a space."""
    option = page.locator(f"{select} option", has_text=re.compile(f"^{re.escape(name)}( |$)"))
    page.select_option(select, option.get_attribute("value"))


def first_boot_wizard(page: Any, server: WebServer) -> None:
    page.goto(server.origin + "/")
    assert page.url.endswith("/setup/")
    shot(page, "setup-wizard")
    token = settings.SETUP_TOKEN_FILE.read_text().strip()  # written on first contact
    page.fill("input[name=token]", "not-the-token")
    page.click("button[type=submit]")
    page.get_by_text("not the setup token").wait_for()
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url("**/setup/admin/")
    page.fill("input[name=username]", ADMIN)
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/setup/appliance/")
    page.fill("input[name=name]", "e2e-rack")
    page.click("button[type=submit]")
    page.wait_for_url("**/setup/host/")
    page.click("#test-connection")  # htmx: the answer lands in the page without a reload
    page.locator("#test-result").get_by_text("Connected to").wait_for()
    page.click("button[type=submit]:has-text('Finish setup')")
    page.wait_for_url(server.origin + "/")


def logout(page: Any) -> None:
    page.click("a.dropdown-toggle[data-bs-toggle=dropdown]")
    page.click("#logout-button")
    page.wait_for_url("**/accounts/login/**")


def login(page: Any, server: WebServer) -> None:
    page.goto(server.origin + "/guests/")
    page.wait_for_url("**/accounts/login/?next=/guests/")
    shot(page, "login")
    page.fill("input[name=username]", ADMIN)
    page.fill("input[name=password]", "wrong-" + PASSWORD)
    page.click("button[type=submit]")
    page.locator(".alert-danger, .invalid-feedback, .errorlist").first.wait_for()
    page.fill("input[name=username]", ADMIN)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/guests/")


def create_and_start_demo_guest(page: Any, server: WebServer) -> None:
    name = f"web-{uuid.uuid4().hex[:6]}"
    page.goto(server.origin + "/guests/new/")
    page.fill("#name", name)
    select_by_text(page, "#host", "demo")
    page.fill("#memory_mib", "256")
    # The NIC joins a bridge the host has, chosen from a list: no free-text bridge.
    assert page.locator("input[name=bridge]").count() == 0
    assert page.input_value("#nic") == "bridge:xenbr0"
    shot(page, "guest-create")
    page.click("#create-guest")
    page.wait_for_url(re.compile(r"/guests/\d+/$"))
    assert page.locator("h1").first.inner_text().startswith(name)
    assert page.get_by_text("bridge xenbr0").count() == 1
    assert page.locator("#guest-state").inner_text().lower() == "shut off"
    page.click("#guest-actions button[data-action=start]")
    page.locator("#guest-state", has_text=re.compile("running", re.I)).wait_for(timeout=STEP_MS)
    shot(page, "guest-detail")


def watch_job_progress(page: Any, server: WebServer) -> None:
    page.goto(server.origin + "/jobs/")
    page.click("#start-selftest")
    page.wait_for_url(re.compile(r"/jobs/\d+/$"))
    page.evaluate("window.__sameDocument = true")  # gone if the page reloaded
    bar = page.locator(".job-bar")
    seen: set[int] = set()

    def advanced() -> bool:
        seen.add(int(bar.get_attribute("aria-valuenow")))
        return any(0 < value < 100 for value in seen)

    wait_for(advanced, STEP_MS / 1000, "the progress bar to move", interval=0.2)
    shot(page, "job-progress")
    page.locator(".job-bar.bg-success").wait_for(timeout=STEP_MS)
    assert bar.get_attribute("aria-valuenow") == "100"
    # Every field follows without a reload: started, finished, worker, the result table.
    page.locator("#job-finished", has_text=re.compile(r"\d{4}-\d\d-\d\d")).wait_for(
        timeout=STEP_MS)
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", page.inner_text("#job-started"))
    assert page.inner_text("#job-worker") not in ("", "\u2013")  # the dash of "none"
    page.locator("#job-result-table", has_text="Steps").wait_for(timeout=STEP_MS)
    assert page.evaluate("window.__sameDocument") is True
    assert len(seen) >= 2, seen


UPLOAD_BYTES = 512 * 1024 * 1024  # random data (no holes): long enough to watch


def upload_volume(host: Any) -> tuple[Any, Any]:
    """A new empty volume in the lab host's local pool, known to the app."""
    from hosts.virt.volumes import create_volume
    from storage.inventory import reconcile_pools
    from storage.models import Pool, Volume

    info = create_volume(VirtTarget(host.uri, allow_insecure=True),
                         "local", f"e2e-{uuid.uuid4().hex[:6]}.img", UPLOAD_BYTES)
    reconcile_pools(host)
    return Pool.objects.get(host=host, name="local"), Volume.objects.get(path=info.path)


LEAVING_IS_STOPPED = """() => {
  const leaving = new Event("beforeunload", {cancelable: true});
  window.dispatchEvent(leaving);
  return leaving.defaultPrevented;
}"""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def upload_as_new_volume(page: Any, pool: Any, tmp_path: Path) -> None:
    """A qcow2 file dropped into the pool as a new volume: made with the file's virtual
    size and format, then filled; nothing to create by hand first."""
    import subprocess

    from storage.models import Volume

    name = f"new-{uuid.uuid4().hex[:6]}.qcow2"
    image = tmp_path / name
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    form = page.locator("#volume-upload-new")
    form.locator("input[type=file]").set_input_files(str(image))
    form.evaluate("f => f.requestSubmit()")
    form.locator(".upload-result", has_text="Uploaded").wait_for(state="attached",
                                                                 timeout=STEP_MS)
    made = off_loop(lambda: Volume.objects.get(pool=pool, name=name))
    assert made.format == "qcow2" and made.capacity == 64 * 1024 * 1024
    page.wait_for_function("() => !document.querySelector('#volume-upload-new .upload-result')"
                           ".textContent", timeout=STEP_MS)  # reloaded: the row is listed
    assert page.locator(f'a.volume-download[data-volume="{made.pk}"]').count() == 1


def watch_upload_progress(page: Any, server: WebServer, host: Any, tmp_path: Path) -> None:
    """A disk image uploaded from the browser: the progress bar moves without a reload,
    leaving the page asks first, and the volume's download button gives the same bytes."""
    import os

    pool, volume = off_loop(upload_volume, host)
    image = tmp_path / "disk.img"
    with image.open("wb") as handle:
        for _ in range(UPLOAD_BYTES // (8 * 1024 * 1024)):
            handle.write(os.urandom(8 * 1024 * 1024))
    try:
        page.goto(f"{server.origin}/storage/pools/{pool.pk}/")
        page.evaluate("window.__sameDocument = true")
        form = page.locator(f'form.volume-upload[data-volume="{volume.pk}"]')
        form.locator("input[type=file]").set_input_files(str(image))
        form.evaluate("f => f.requestSubmit()")
        bar = form.locator(".job-bar")
        seen: set[int] = set()

        def advanced() -> bool:
            value = bar.get_attribute("aria-valuenow")
            if value is not None:
                seen.add(int(value))
            return any(0 < v < 100 for v in seen)

        wait_for(advanced, STEP_MS / 1000, "the upload's progress bar to move", interval=0.1)
        assert page.evaluate("window.__sameDocument") is True  # it moved without a reload
        # Leaving now would abort it: the page asks first.
        assert page.evaluate("() => window.xenwebUploads()") == 1
        assert page.evaluate(LEAVING_IS_STOPPED) is True
        # (the row stays collapsed: the result is in the page, not necessarily on screen)
        form.locator(".upload-result", has_text="Uploaded").wait_for(state="attached",
                                                                     timeout=STEP_MS * 2)
        assert page.evaluate(LEAVING_IS_STOPPED) is False
        # The page reloads with the new content; its download button gives the same bytes.
        page.wait_for_function("() => !window.__sameDocument", timeout=STEP_MS)
        with page.expect_download(timeout=STEP_MS * 2) as started:
            page.click(f'a.volume-download[data-volume="{volume.pk}"]')
        download = started.value
        assert download.suggested_filename == volume.name
        assert file_sha256(Path(download.path())) == file_sha256(image)
        upload_as_new_volume(page, pool, tmp_path)
    finally:
        from hosts.virt.volumes import delete_volume

        try:
            off_loop(lambda: delete_volume(VirtTarget(host.uri, allow_insecure=True), volume.path))
        except VirtError:
            pass


def lab_guest(lab_hosts: list[Any]) -> tuple[Any, Guest, str]:
    hosts = [register_lab_host(lab_host)[0] for lab_host in lab_hosts[:2]]
    info = virt.define_domain(VirtTarget(hosts[0].uri, allow_insecure=True),
                              tiny_spec(f"e2e-{uuid.uuid4().hex[:6]}"))
    reconcile_host(hosts[0])
    return hosts[0], Guest.objects.get(host=hosts[0], uuid=info.uuid), info.uuid


def create_form_follows_the_host(page: Any, server: WebServer, lab_host: str) -> None:
    """Choosing another host reloads the form's choices in place (htmx): its networks,
    pools and bounds, and what was typed stays."""
    page.goto(server.origin + "/guests/new/")
    page.fill("#name", "follows-host")
    select_by_text(page, "#host", lab_host)
    page.locator("#host-bounds", has_text=f"{lab_host}: up to").wait_for()  # swapped in
    assert page.locator("#nic option[value='bridge:xenbr0']").count() == 0
    assert page.input_value("#nic").startswith("bridge:xwlab")  # the lab's bridge, first
    assert page.locator("#nic option[value='network:default']").count() == 1
    pools = page.locator("#disk_pool option").all_inner_texts()
    assert any(text.startswith("local ") for text in pools), pools
    assert page.input_value("#name") == "follows-host"
    select_by_text(page, "#host", "demo")
    page.locator("#host-bounds", has_text="demo: up to").wait_for()
    assert page.input_value("#nic") == "bridge:xenbr0"
    assert page.input_value("#name") == "follows-host"


def refresh_from_db_and_probe(host_id: int) -> None:
    refresh_host(Host.objects.get(pk=host_id))


def alert_appears_live(page: Any, server: WebServer, host: Host) -> None:
    """A lab host's libvirtd dies: the probe the watcher makes marks it unreachable and the
    open dashboard shows the alert at once (a toast, the bell's count, the alert list)."""
    off_loop(lambda: Alert.objects.update(acknowledged_at=timezone.now()))  # earlier steps'
    page.goto(server.origin + "/")
    assert page.locator("#alert-count").is_hidden()  # nothing open
    running = {lab_host.name: lab_host for lab_host in lab_up(2)}
    os.kill(running[host.name].pid, signal.SIGKILL)
    try:
        off_loop(refresh_from_db_and_probe, host.pk)
        toast = page.locator("[data-alert-toast]", has_text=f"Host '{host.name}' is unreachable")
        toast.wait_for(timeout=STEP_MS)
        page.locator("#alert-count", has_text="1").wait_for(timeout=STEP_MS)
        page.locator("#dashboard-alerts", has_text=f"Host '{host.name}' is unreachable").wait_for(
            timeout=STEP_MS)
        shot(page, "alert-live")
    finally:
        lab_up(2)
        off_loop(refresh_from_db_and_probe, host.pk)
    page.locator("#alert-count", has_text="2").wait_for(timeout=STEP_MS)  # and back again
    page.click("#alert-bell")
    page.wait_for_url("**/alerts/")
    page.click("#acknowledge-all")
    page.locator("#no-alerts").wait_for()
    assert page.locator("#alert-count").is_hidden()


def remove_lab_guest(uri: str, domain_uuid: str) -> None:
    try:
        virt.destroy(VirtTarget(uri, allow_insecure=True), domain_uuid)
    except VirtError:
        pass
    virt.undefine(VirtTarget(uri, allow_insecure=True), domain_uuid)


def console_and_migration_dialog(page: Any, server: WebServer, guest: Guest, target: str) -> None:
    page.goto(f"{server.origin}/guests/{guest.pk}/")
    page.click("#guest-actions button[data-action=start]")
    page.locator("#guest-state", has_text=re.compile("running", re.I)).wait_for(timeout=STEP_MS)

    page.click("#open-console")
    page.locator("#guest-console[data-console-state=connected]").wait_for(timeout=STEP_MS)
    rows = page.locator("#console-terminal .xterm-rows")
    rows.filter(has_text=re.compile(f"{TINY_GUEST_BANNER}|{TINY_GUEST_TICK}")).wait_for(
        timeout=BOOT_MS)
    shot(page, "guest-console")

    page.goto(f"{server.origin}/guests/{guest.pk}/")
    page.click("#open-migrate")
    page.locator("#migrate-modal.show").wait_for()
    select_by_text(page, "#migrate-host", target)
    checks = page.locator("#migrate-checks li[data-check]")
    checks.first.wait_for(timeout=STEP_MS)
    texts = checks.all_inner_texts()
    assert len(texts) >= 3, texts
    assert any(re.search(r"memory", text, re.I) for text in texts), texts
    shot(page, "migrate-dialog")
    page.click("#migrate-modal button[data-bs-dismiss=modal].btn-secondary")


def test_operator_journey_in_a_browser(
    browser: Any, e2e_server: WebServer, e2e_worker: Any, lab_hosts: list[Any],
    tmp_path: Path,
) -> None:
    settings.SETUP_TOKEN_FILE.unlink(missing_ok=True)
    off_loop(cache.clear)  # wizard throttling counters of earlier tests
    page = browser.new_page()
    page.set_default_timeout(STEP_MS)
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)

    first_boot_wizard(page, e2e_server)
    assert not settings.SETUP_TOKEN_FILE.exists()
    logout(page)
    login(page, e2e_server)
    page.goto(e2e_server.origin + "/")
    assert page.locator("#count-hosts").inner_text() == "1"  # the demo host
    shot(page, "dashboard")

    create_and_start_demo_guest(page, e2e_server)
    watch_job_progress(page, e2e_server)

    host, guest, domain_uuid = off_loop(lab_guest, lab_hosts)
    try:
        create_form_follows_the_host(page, e2e_server, host.name)
        console_and_migration_dialog(page, e2e_server, guest, lab_hosts[1].name)
        watch_upload_progress(page, e2e_server, host, tmp_path)
        alert_appears_live(page, e2e_server, host)
    finally:
        off_loop(remove_lab_guest, host.uri, domain_uuid)

    logout(page)
    page.goto(e2e_server.origin + "/")
    assert "/accounts/login/" in page.url
    page.close()
    # The content security policy blocked nothing the pages need.
    assert not [e for e in console_errors if "Content Security Policy" in e], console_errors
