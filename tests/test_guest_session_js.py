"""static/xenweb/guest_session.js, what the text and the graphical console pages share: both
pages load it, and its reconnect schedule behaves as the pages expect (run with node when
it is installed; the browser suite runs the pages themselves)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from django.test import Client

from guests.models import Guest
from hosts.models import Host

SCRIPT = Path(__file__).resolve().parents[1] / "static" / "xenweb" / "guest_session.js"

CONTEXT = """
const vm = require("vm");
const log = [];
let timers = [];
const listeners = {};
const element = (id) => ({ id, dataset: {}, textContent: "", className: "",
  classList: { set: new Set(), add(c) { this.set.add(c); }, remove(c) { this.set.delete(c); } } });
const ctx = {
  location: { protocol: "https:", host: "app.example:8443" },
  document: { addEventListener(type, fn) { listeners[type] = fn; },
              getElementById(id) { return element(id); } },
  setTimeout(fn, ms) { timers.push({ fn, ms }); return timers.length; },
  clearTimeout() { timers = []; },
  Math, String,
};
ctx.window = ctx;
vm.createContext(ctx);
vm.runInContext(process.argv[1], ctx);
const common = ctx.xenwebGuestSession;
"""

HARNESS = CONTEXT + """
const root = element("root"), status = element("status"), detail = element("detail");
const button = element("button");
const setStatus = common.statusLine(root, "consoleState", status, detail, { stopped: "warning" });
let connects = 0;
const retry = common.retrier(() => { connects += 1; }, setStatus, button, "7");
const waits = [];
for (let i = 0; i < 7; i++) waits.push(retry.backoff());
retry.reset();
retry.guestStopped("stopped", "guest stopped", "It stopped.");
const stopped = { state: root.dataset.consoleState, badge: status.className,
                  detail: detail.textContent, timer: timers.map((t) => t.ms),
                  shown: !button.classList.set.has("d-none") };
listeners["xenweb:event"]({ detail: { type: "inventory.update", object: "guests", host: 8 } });
const afterOtherHost = connects;
listeners["xenweb:event"]({ detail: { type: "inventory.update", object: "guests", host: 7 } });
const afterOwnHost = connects;
retry.clear();
listeners["xenweb:event"]({ detail: { type: "inventory.update", object: "guests", host: 7 } });
process.stdout.write(JSON.stringify({
  url: common.socketUrl("/ws/guests/1/console/"), waits, stopped, afterOtherHost, afterOwnHost,
  afterClear: connects, delay: retry.delay,
  codes: [common.CLOSE_GUEST_STOPPED, common.CLOSE_TAKEN_OVER, common.CLOSE_NO_CONSOLE,
          common.CLOSE_REFUSED_INPUT, common.CLOSE_IN_USE],
}));
"""

PAGE_HARNESS = CONTEXT + """
const root = element("root");
root.dataset.hostId = "7";
let connects = 0;
const page = common.page(root, "vnc", "vncState", { connecting: "secondary" },
                         () => { connects += 1; });
const ids = [page.detailEl.id, page.reconnectBtn.id, page.viewerNote.id];
const retry = page.retry;
page.reconnectBtn.classList.remove("d-none");
const began = retry.begin(null);
const connecting = { state: root.dataset.vncState,
                     hidden: page.reconnectBtn.classList.set.has("d-none") };
const busy = retry.begin({});
retry.lost("");
const lost = { detail: page.detailEl.textContent, timer: timers.map((t) => t.ms) };
retry.stop("error", "refused", "No.");
const stopped = { state: root.dataset.vncState, detail: page.detailEl.textContent,
                  timers: timers.length, shown: !page.reconnectBtn.classList.set.has("d-none") };
process.stdout.write(JSON.stringify({
  ids, began, busy, connecting, lost, stopped,
  parsed: [common.statusMessage('{"type": "vnc.status"}'), common.statusMessage("{nope")],
}));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_shared_reconnect_schedule() -> None:
    result = subprocess.run(["node", "-e", HARNESS, SCRIPT.read_text()], capture_output=True,
                            text=True, timeout=60, check=True)
    answer = json.loads(result.stdout)
    assert answer["url"] == "wss://app.example:8443/ws/guests/1/console/"
    assert answer["waits"] == [1000, 2000, 4000, 8000, 16000, 30000, 30000]
    assert answer["stopped"] == {"state": "stopped", "badge": "badge text-bg-warning",
                                 "detail": "It stopped. Retrying in 3 s.", "timer": [3000],
                                 "shown": True}
    # A stopped guest is retried at once when its host reports a guest change, only then.
    assert (answer["afterOtherHost"], answer["afterOwnHost"], answer["afterClear"]) == (0, 1, 1)
    assert answer["delay"] == 1000
    assert answer["codes"] == [4000, 4001, 4003, 4004, 4005]


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_shared_page_parts() -> None:
    result = subprocess.run(["node", "-e", PAGE_HARNESS, SCRIPT.read_text()],
                            capture_output=True, text=True, timeout=60, check=True)
    answer = json.loads(result.stdout)
    assert answer["ids"] == ["vnc-detail", "vnc-reconnect", "vnc-viewer-note"]
    # connect() begins only without an open socket: the button hides, the badge connects.
    assert (answer["began"], answer["busy"]) == (True, False)
    assert answer["connecting"] == {"state": "connecting", "hidden": True}
    assert answer["lost"] == {"detail": "The connection was lost. Retrying in 1 s.",
                              "timer": [1000]}
    assert answer["stopped"] == {"state": "error", "detail": "No.", "timers": 0,
                                 "shown": True}
    assert answer["parsed"] == [{"type": "vnc.status"}, None]


@pytest.mark.django_db
def test_both_console_pages_load_it_first(operator_client: Client) -> None:
    host = Host.objects.create(name="h1", uri="test:///default")
    guest = Guest.objects.create(host=host, uuid="6695eb01-f6a4-8304-79aa-97f2502e193f",
                                 name="g1", state="running")
    for page, script in (("console", "xenweb/console.js"), ("vnc", "xenweb/vnc.js")):
        body = operator_client.get(f"/guests/{guest.pk}/{page}/").content.decode()
        assert "xenweb/guest_session.js" in body, page
        assert body.index("xenweb/guest_session.js") < body.index(script), page
