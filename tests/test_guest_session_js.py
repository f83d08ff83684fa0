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

HARNESS = """
const vm = require("vm");
const log = [];
let timers = [];
const listeners = {};
const element = (id) => ({ id, dataset: {}, textContent: "", className: "",
  classList: { set: new Set(), add(c) { this.set.add(c); }, remove(c) { this.set.delete(c); } } });
const ctx = {
  location: { protocol: "https:", host: "app.example:8443" },
  document: { addEventListener(type, fn) { listeners[type] = fn; } },
  setTimeout(fn, ms) { timers.push({ fn, ms }); return timers.length; },
  clearTimeout() { timers = []; },
  Math, String,
};
ctx.window = ctx;
vm.createContext(ctx);
vm.runInContext(process.argv[1], ctx);
const common = ctx.xenwebGuestSession;
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


@pytest.mark.django_db
def test_both_console_pages_load_it_first(operator_client: Client) -> None:
    host = Host.objects.create(name="h1", uri="test:///default")
    guest = Guest.objects.create(host=host, uuid="6695eb01-f6a4-8304-79aa-97f2502e193f",
                                 name="g1", state="running")
    for page, script in (("console", "xenweb/console.js"), ("vnc", "xenweb/vnc.js")):
        body = operator_client.get(f"/guests/{guest.pk}/{page}/").content.decode()
        assert "xenweb/guest_session.js" in body, page
        assert body.index("xenweb/guest_session.js") < body.index(script), page
