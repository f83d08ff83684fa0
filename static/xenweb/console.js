/* xenweb guest text console: xterm.js bridged to /ws/guests/<pk>/console/
 * (guests/console/text_consumer.py).
 *
 * Binary frames carry console bytes both ways; text frames from the server are JSON status
 * messages. What the graphical console does alike is in guest_session.js (loaded first).
 * The close code says what to do next:
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

  const common = window.xenwebGuestSession;
  const IN_USE_DELAY = 15000;
  const STATUS_CLASS = {
    connecting: "secondary", connected: "success", stopped: "warning", reconnecting: "warning",
    "taken-over": "info", "in-use": "info", "no-console": "secondary", error: "danger",
  };

  function debounce(fn, ms) {
    let timer = null;
    return function () { clearTimeout(timer); timer = setTimeout(fn, ms); };
  }

  function setup(root) {
    const path = root.dataset.consoleWs;
    const readonly = root.dataset.readonly === "true";
    const el = document.getElementById("console-terminal");
    const { setStatus, detailEl, reconnectBtn, viewerNote, retry } =
      common.page(root, "console", "consoleState", STATUS_CLASS, connect);
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
    function note(text) { term.write("\r\n\x1b[2m[" + text + "]\x1b[0m\r\n"); }

    // ---- the websocket, with reconnect and backoff ------------------------------------
    let ws = null, everConnected = false;

    function connect() {
      if (!retry.begin(ws)) return;
      let last = null, live = false;
      const socket = new WebSocket(common.socketUrl(path));
      socket.binaryType = "arraybuffer";
      ws = socket;
      socket.onmessage = function (ev) {
        if (typeof ev.data !== "string") { term.write(new Uint8Array(ev.data)); return; }
        const msg = common.statusMessage(ev.data);
        if (!msg) return;
        if (msg.type === "console.status") {
          live = true;
          retry.reset();
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
        if (ev.code === common.CLOSE_TAKEN_OVER) {
          if (live) note("console taken over by another session");
          retry.stop("taken-over", "taken over", message);
          return;
        }
        if (ev.code === common.CLOSE_IN_USE) {
          retry.schedule(IN_USE_DELAY, "in-use", "in use by another session", message);
          return;
        }
        if (ev.code === common.CLOSE_NO_CONSOLE) {
          setStatus("no-console", "no console", message);
          return;
        }
        if (ev.code === common.CLOSE_GUEST_STOPPED) {
          if (last && last.reason === "restarted") {
            if (live) note("guest restarted");
            retry.schedule(500, "reconnecting", "reconnecting", message);
            return;
          }
          if (live) note("guest stopped");
          retry.guestStopped("stopped", "guest stopped", message);
          return;
        }
        if (live) note("connection lost");
        retry.lost(message);
      };
    }

    reconnectBtn.addEventListener("click", function () { retry.reset(); connect(); });

    // ---- keystrokes -----------------------------------------------------------------------
    function send(bytes) {
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(bytes);
    }
    term.onData(function (data) { if (!readonly) send(encoder.encode(data)); });
    term.onBinary(function (data) {
      if (!readonly) send(Uint8Array.from(data, function (c) { return c.charCodeAt(0) & 255; }));
    });
    if (readonly) common.flashOnInput(el, "keydown", viewerNote);

    connect();
  }

  document.addEventListener("DOMContentLoaded", function () {
    const root = document.getElementById("guest-console");
    if (root && window.Terminal) setup(root);
  });
})();
