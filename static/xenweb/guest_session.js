/* What the pages of a guest's consoles share (console.js: text, vnc.js: graphical; their
 * server side is guests/console/sessions.py): the close codes (xenweb/ws_base.py), the
 * socket's URL, the status messages, the page's status line and Reconnect button, and the
 * reconnect schedule. A classic script, loaded before either of them; they find it as
 * window.xenwebGuestSession.
 */
(function () {
  "use strict";

  const CLOSE_GUEST_STOPPED = 4000, CLOSE_TAKEN_OVER = 4001, CLOSE_NO_CONSOLE = 4003;
  const CLOSE_REFUSED_INPUT = 4004, CLOSE_IN_USE = 4005;
  const MIN_DELAY = 1000, MAX_DELAY = 30000, STOPPED_MIN_DELAY = 3000;

  function socketUrl(path) {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
  }

  /* A text frame from the server: its JSON status message, or null. */
  function statusMessage(text) {
    try { return JSON.parse(text); } catch (e) { return null; }
  }

  /* setStatus(state, text, detail) for the badge `statusEl` and the line `detailEl`; the
   * state is also root's data attribute `stateKey` (what the browser tests wait for). */
  function statusLine(root, stateKey, statusEl, detailEl, classes) {
    return function setStatus(state, text, detail) {
      statusEl.textContent = text;
      statusEl.dataset.state = state;
      statusEl.className = "badge text-bg-" + (classes[state] || "secondary");
      detailEl.textContent = detail || "";
      root.dataset[stateKey] = state;
    };
  }

  /* When to call connect() again. `delay` doubles after each failure (up to MAX_DELAY) and
   * is back to MIN_DELAY once a session works; a stopped guest is retried slowly, at once
   * when an inventory event says a guest of `hostId` changed (app.js relays /ws/events/). */
  function retrier(connect, setStatus, reconnectBtn, hostId) {
    const retry = { delay: MIN_DELAY, timer: null, waitingForGuest: false };

    /* Before each attempt: nothing scheduled any more. */
    retry.clear = function () {
      clearTimeout(retry.timer);
      retry.timer = null;
      retry.waitingForGuest = false;
    };
    /* The start of connect(): false while a socket is still `open` (nothing to do). */
    retry.begin = function (open) {
      retry.clear();
      if (open) return false;
      reconnectBtn.classList.add("d-none");
      setStatus("connecting", "connecting…");
      return true;
    };
    /* No retry: the status, and the Reconnect button. */
    retry.stop = function (state, text, detail) {
      clearTimeout(retry.timer);
      setStatus(state, text, detail);
      reconnectBtn.classList.remove("d-none");
    };
    retry.schedule = function (ms, state, text, detail) {
      clearTimeout(retry.timer);
      setStatus(state, text, (detail ? detail + " " : "") + "Retrying in " + Math.round(ms / 1000) + " s.");
      retry.timer = setTimeout(connect, ms);
      reconnectBtn.classList.remove("d-none");
    };
    retry.reset = function () { retry.delay = MIN_DELAY; };
    /* The next wait after a lost connection. */
    retry.backoff = function () {
      const wait = retry.delay;
      retry.delay = Math.min(retry.delay * 2, MAX_DELAY);
      return wait;
    };
    /* After a lost connection or a failure of the host. */
    retry.lost = function (message) {
      retry.schedule(retry.backoff(), "reconnecting", "reconnecting",
                     message || "The connection was lost.");
    };
    /* After the guest stopped: a slow retry, and an early one when the guest starts. */
    retry.guestStopped = function (state, text, detail) {
      const wait = Math.max(retry.delay, STOPPED_MIN_DELAY);
      retry.delay = Math.min(wait * 2, MAX_DELAY);
      retry.schedule(wait, state, text, detail);
      retry.waitingForGuest = true;
    };

    document.addEventListener("xenweb:event", function (ev) {
      const msg = ev.detail || {};
      if (!retry.waitingForGuest || msg.type !== "inventory.update" || msg.object !== "guests") return;
      if (msg.host !== undefined && String(msg.host) !== hostId) return;
      retry.reset();
      connect();
    });
    return retry;
  }

  /* What both pages have, by id (`prefix`-status, -detail, -reconnect, -viewer-note): the
   * status line (`stateKey`, `classes`: see statusLine) and the reconnect schedule of
   * `connect` for the guest's host (root's data-host-id). */
  function page(root, prefix, stateKey, classes, connect) {
    const byId = function (name) { return document.getElementById(prefix + "-" + name); };
    const detailEl = byId("detail"), reconnectBtn = byId("reconnect");
    const setStatus = statusLine(root, stateKey, byId("status"), detailEl, classes);
    return {
      setStatus: setStatus, detailEl: detailEl, reconnectBtn: reconnectBtn,
      viewerNote: byId("viewer-note"),
      retry: retrier(connect, setStatus, reconnectBtn, root.dataset.hostId),
    };
  }

  /* A viewer who tries to type or click sees the note that says why nothing happens. */
  function flashOnInput(target, eventName, note) {
    if (!note) return;
    target.addEventListener(eventName, function () {
      note.classList.add("text-danger");
      setTimeout(function () { note.classList.remove("text-danger"); }, 1500);
    });
  }

  window.xenwebGuestSession = {
    CLOSE_GUEST_STOPPED: CLOSE_GUEST_STOPPED, CLOSE_TAKEN_OVER: CLOSE_TAKEN_OVER,
    CLOSE_NO_CONSOLE: CLOSE_NO_CONSOLE, CLOSE_REFUSED_INPUT: CLOSE_REFUSED_INPUT,
    CLOSE_IN_USE: CLOSE_IN_USE,
    socketUrl: socketUrl, statusMessage: statusMessage, statusLine: statusLine,
    retrier: retrier, page: page, flashOnInput: flashOnInput,
  };
})();
