/* xenweb guest text console: xterm.js bridged to /ws/guests/<pk>/console/ (guests/consumers.py).
 *
 * Binary frames carry console bytes both ways; text frames from the server are JSON status
 * messages. The close code says what to do next:
 *   4000 guest stopped / not running / restarted -> retry (slowly; at once on a guest event)
 *   4001 taken over by another console session  -> wait for the Reconnect button
 *   4002 host or stream error                   -> retry with backoff
 *   4003 no console (Domain-0, guest gone)      -> stop
 *   4005 in use by another session (viewers only: they never take a console over)
 *                                               -> retry slowly, or on the Reconnect button
 *   anything else (network, server restart)     -> retry with backoff
 */
(function () {
  "use strict";

  const CLOSE_GUEST_STOPPED = 4000, CLOSE_TAKEN_OVER = 4001, CLOSE_NO_CONSOLE = 4003;
  const CLOSE_IN_USE = 4005;
  const MIN_DELAY = 1000, MAX_DELAY = 30000, STOPPED_MIN_DELAY = 3000, IN_USE_DELAY = 15000;
  const STATUS_CLASS = {
    connecting: "secondary", connected: "success", stopped: "warning", reconnecting: "warning",
    "taken-over": "info", "in-use": "info", "no-console": "secondary", error: "danger",
  };

  function socketUrl(path) {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
  }

  function debounce(fn, ms) {
    let timer = null;
    return function () { clearTimeout(timer); timer = setTimeout(fn, ms); };
  }

  function setup(root) {
    const path = root.dataset.consoleWs;
    const readonly = root.dataset.readonly === "true";
    const hostId = root.dataset.hostId;
    const el = document.getElementById("console-terminal");
    const statusEl = document.getElementById("console-status");
    const detailEl = document.getElementById("console-detail");
    const reconnectBtn = document.getElementById("console-reconnect");
    const viewerNote = document.getElementById("console-viewer-note");
    const encoder = new TextEncoder();

    const term = new window.Terminal({
      cursorBlink: !readonly,
      disableStdin: readonly,
      scrollback: 5000,
      fontSize: 14,
      fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace',
      theme: { background: "#000000" },
    });
    term.open(el);

    // ---- sizing: fill the card (a serial console has no size to tell the guest) ------
    function cellSize() {
      const core = term._core, dims = core && core._renderService && core._renderService.dimensions;
      if (dims && dims.css && dims.css.cell && dims.css.cell.width) {
        return { w: dims.css.cell.width, h: dims.css.cell.height };
      }
      const probe = document.createElement("span");
      probe.style.cssText = "position:absolute;visibility:hidden;white-space:pre;font-family:" +
        term.options.fontFamily + ";font-size:" + term.options.fontSize + "px";
      probe.textContent = "W".repeat(40);
      document.body.appendChild(probe);
      const size = { w: probe.offsetWidth / 40, h: probe.offsetHeight };
      probe.remove();
      return size;
    }
    function fit() {
      const cell = cellSize();
      if (!cell.w || !cell.h) return;
      const scrollbar = 16;
      const cols = Math.max(20, Math.floor((el.clientWidth - scrollbar) / cell.w));
      const rows = Math.max(5, Math.floor(el.clientHeight / cell.h));
      if (cols !== term.cols || rows !== term.rows) term.resize(cols, rows);
    }
    fit();
    const refit = debounce(fit, 100);
    window.addEventListener("resize", refit);
    if (window.ResizeObserver) new ResizeObserver(refit).observe(el);

    // ---- status line -------------------------------------------------------------------
    function setStatus(state, text, detail) {
      statusEl.textContent = text;
      statusEl.dataset.state = state;
      statusEl.className = "badge text-bg-" + (STATUS_CLASS[state] || "secondary");
      detailEl.textContent = detail || "";
      root.dataset.consoleState = state;
    }
    function note(text) { term.write("\r\n\x1b[2m[" + text + "]\x1b[0m\r\n"); }

    // ---- the websocket, with reconnect and backoff ------------------------------------
    let ws = null, retryTimer = null, delay = MIN_DELAY, everConnected = false, waitingForGuest = false;

    function schedule(ms, state, text, detail) {
      clearTimeout(retryTimer);
      setStatus(state, text, (detail ? detail + " " : "") + "Retrying in " + Math.round(ms / 1000) + " s.");
      retryTimer = setTimeout(connect, ms);
      reconnectBtn.classList.remove("d-none");
    }

    function connect() {
      clearTimeout(retryTimer);
      retryTimer = null;
      waitingForGuest = false;
      if (ws) return;
      reconnectBtn.classList.add("d-none");
      setStatus("connecting", "connecting…");
      let last = null, live = false;
      const socket = new WebSocket(socketUrl(path));
      socket.binaryType = "arraybuffer";
      ws = socket;
      socket.onmessage = function (ev) {
        if (typeof ev.data !== "string") { term.write(new Uint8Array(ev.data)); return; }
        let msg;
        try { msg = JSON.parse(ev.data); } catch (e) { return; }
        if (msg.type === "console.status") {
          live = true;
          delay = MIN_DELAY;
          if (everConnected) note("console reconnected");
          everConnected = true;
          setStatus("connected", msg.readonly ? "connected (read-only)" : "connected");
          if (!readonly) term.focus();
        } else if (msg.type === "console.readonly") {
          detailEl.textContent = msg.message;
        } else if (msg.type === "console.closed") {
          last = msg;
        }
      };
      socket.onclose = function (ev) {
        if (ws === socket) ws = null;
        const message = last ? last.message : "";
        if (ev.code === CLOSE_TAKEN_OVER) {
          if (live) note("console taken over by another session");
          setStatus("taken-over", "taken over", message);
          reconnectBtn.classList.remove("d-none");
          return;
        }
        if (ev.code === CLOSE_IN_USE) {
          schedule(IN_USE_DELAY, "in-use", "in use by another session", message);
          return;
        }
        if (ev.code === CLOSE_NO_CONSOLE) {
          setStatus("no-console", "no console", message);
          return;
        }
        if (ev.code === CLOSE_GUEST_STOPPED) {
          if (last && last.reason === "restarted") {
            if (live) note("guest restarted");
            schedule(500, "reconnecting", "reconnecting", message);
            return;
          }
          if (live) note("guest stopped");
          const wait = Math.max(delay, STOPPED_MIN_DELAY);
          delay = Math.min(wait * 2, MAX_DELAY);
          schedule(wait, "stopped", "guest stopped", message);
          waitingForGuest = true;
          return;
        }
        if (live) note("connection lost");
        const wait = delay;
        delay = Math.min(delay * 2, MAX_DELAY);
        schedule(wait, "reconnecting", "reconnecting", message || "The connection was lost.");
      };
    }

    reconnectBtn.addEventListener("click", function () { delay = MIN_DELAY; connect(); });

    // A guest that starts shows up as an inventory change (app.js relays /ws/events/):
    // reconnect at once instead of waiting for the next retry.
    document.addEventListener("xenweb:event", function (ev) {
      const msg = ev.detail || {};
      if (!waitingForGuest || msg.type !== "inventory.update" || msg.object !== "guests") return;
      if (msg.host !== undefined && String(msg.host) !== hostId) return;
      delay = MIN_DELAY;
      connect();
    });

    // ---- keystrokes -----------------------------------------------------------------------
    function send(bytes) {
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(bytes);
    }
    term.onData(function (data) { if (!readonly) send(encoder.encode(data)); });
    term.onBinary(function (data) {
      if (!readonly) send(Uint8Array.from(data, function (c) { return c.charCodeAt(0) & 255; }));
    });
    if (readonly && viewerNote) {
      el.addEventListener("keydown", function () {
        viewerNote.classList.add("text-danger");
        setTimeout(function () { viewerNote.classList.remove("text-danger"); }, 1500);
      });
    }

    connect();
  }

  document.addEventListener("DOMContentLoaded", function () {
    const root = document.getElementById("guest-console");
    if (root && window.Terminal) setup(root);
  });
})();
