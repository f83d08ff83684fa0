/* xenweb guest graphical console: noVNC over the proxy /ws/guests/<pk>/vnc/
 * (guests/console/vnc_consumer.py).
 *
 * An ES module; noVNC's core/rfb.js (an ES module too) is imported from the URL in
 * data-novnc. Binary frames carry RFB bytes both ways; the proxy's text frames are JSON status
 * messages, kept away from noVNC by StatusChannel. What the text console does alike is in
 * guest_session.js (a classic script, loaded first). The close code says what to do next:
 *   4000 guest stopped / not running            -> retry (slowly; at once on a guest event)
 *   4002 host, tunnel or VNC server error       -> retry with backoff
 *   4003 no VNC (Domain-0, no graphics, TLS host, guest gone) -> stop
 *   4004 refused input of a view-only session   -> stop
 *   anything else (network, server restart)     -> retry with backoff
 * A wrong VNC password stops too (the Reconnect button asks again).
 */

const common = window.xenwebGuestSession;
const STATUS_CLASS = {
  connecting: "secondary", connected: "success", stopped: "warning", reconnecting: "warning",
  "no-vnc": "secondary", error: "danger", password: "info",
};

/* A WebSocket as noVNC sees it (a "raw channel"), minus the proxy's text frames, which go to
 * onStatus instead. noVNC sets onopen/onmessage/onclose/onerror and uses send/close. */
class StatusChannel {
  constructor(ws, onStatus) {
    this._ws = ws;
    this.onopen = null;
    this.onmessage = null;
    this.onclose = null;
    this.onerror = null;
    ws.binaryType = "arraybuffer";
    ws.addEventListener("open", (ev) => { if (this.onopen) this.onopen(ev); });
    ws.addEventListener("error", (ev) => { if (this.onerror) this.onerror(ev); });
    ws.addEventListener("close", (ev) => { if (this.onclose) this.onclose(ev); });
    ws.addEventListener("message", (ev) => {
      if (typeof ev.data === "string") {
        const msg = common.statusMessage(ev.data);
        if (msg) onStatus(msg);
      } else if (this.onmessage) {
        this.onmessage(ev);
      }
    });
  }
  get binaryType() { return this._ws.binaryType; }
  set binaryType(value) { this._ws.binaryType = value; }
  get protocol() { return this._ws.protocol; }
  get readyState() { return this._ws.readyState; }
  send(data) { this._ws.send(data); }
  close(code, reason) { this._ws.close(code, reason); }
}

function setup(root, RFB) {
  const path = root.dataset.vncWs;
  const viewOnly = root.dataset.viewOnly === "true";
  const screen = document.getElementById("vnc-screen");
  const cadBtn = document.getElementById("vnc-ctrl-alt-del");
  const scaleBox = document.getElementById("vnc-scale");
  const credentials = document.getElementById("vnc-credentials");
  const passwordInput = document.getElementById("vnc-password");
  const { setStatus, detailEl, reconnectBtn, viewerNote, retry } =
    common.page(root, "vnc", "vncState", STATUS_CLASS, connect);

  let rfb = null, ws = null;

  function connect() {
    if (!retry.begin(ws)) return;
    credentials.classList.add("d-none");
    let last = null, live = false, securityFailure = null;
    const socket = new WebSocket(common.socketUrl(path), ["binary"]);
    ws = socket;
    const channel = new StatusChannel(socket, function (msg) {
      if (msg.type === "vnc.status") {
        setStatus("connecting", "handshake…", msg.via === "ssh" ? "Through an SSH tunnel." : "");
      } else if (msg.type === "vnc.closed") {
        last = msg;
      }
    });
    const session = new RFB(screen, channel, { shared: true });
    rfb = session;
    session.viewOnly = viewOnly;
    session.focusOnClick = !viewOnly;
    session.scaleViewport = scaleBox.checked;
    session.clipViewport = !scaleBox.checked;
    session.resizeSession = false;
    session.background = "#000";
    session.addEventListener("connect", function () {
      live = true;
      retry.reset();
      credentials.classList.add("d-none");
      setStatus("connected", viewOnly ? "connected (view-only)" : "connected", desktopName);
      if (cadBtn) cadBtn.disabled = false;
      if (!viewOnly) session.focus();
    });
    let desktopName = "";
    session.addEventListener("desktopname", function (ev) {
      desktopName = ev.detail.name || "";
      if (live) detailEl.textContent = desktopName;
    });
    session.addEventListener("credentialsrequired", function () {
      setStatus("password", "password needed");
      credentials.classList.remove("d-none");
      passwordInput.value = "";
      passwordInput.focus();
    });
    session.addEventListener("securityfailure", function (ev) {
      securityFailure = ev.detail.reason || "The VNC server refused the connection (wrong password?).";
    });
    session.addEventListener("disconnect", function () {
      if (rfb === session) rfb = null;
      if (cadBtn) cadBtn.disabled = true;
    });
    socket.addEventListener("close", function (ev) {
      if (ws !== socket) return;  // an old session, replaced by the Reconnect button
      ws = null;
      credentials.classList.add("d-none");
      const message = last ? last.message : "";
      if (securityFailure) {
        retry.stop("error", "refused", securityFailure);
        return;
      }
      const noConsole = ev.code === common.CLOSE_NO_CONSOLE;
      if (noConsole || ev.code === common.CLOSE_REFUSED_INPUT) {
        retry.stop(noConsole ? "no-vnc" : "error", noConsole ? "no graphical console" : "refused",
                   message);
        return;
      }
      if (ev.code === common.CLOSE_GUEST_STOPPED) {
        retry.guestStopped("stopped", live ? "guest stopped" : "not running", message);
        return;
      }
      retry.lost(message);
    });
  }

  credentials.addEventListener("submit", function (ev) {
    ev.preventDefault();
    if (rfb) rfb.sendCredentials({ password: passwordInput.value });
    passwordInput.value = "";
    credentials.classList.add("d-none");
    setStatus("connecting", "handshake…");
  });
  reconnectBtn.addEventListener("click", function () {
    retry.reset();
    const old = ws, oldRfb = rfb;
    ws = null;
    rfb = null;
    if (oldRfb) oldRfb.disconnect();
    else if (old) old.close();
    connect();
  });
  if (cadBtn) {
    cadBtn.addEventListener("click", function () {
      if (rfb && !viewOnly) { rfb.sendCtrlAltDel(); rfb.focus(); }
    });
  }
  scaleBox.addEventListener("change", function () {
    if (!rfb) return;
    rfb.scaleViewport = scaleBox.checked;
    rfb.clipViewport = !scaleBox.checked;
  });
  if (viewOnly) common.flashOnInput(screen, "mousedown", viewerNote);

  connect();
}

const root = document.getElementById("guest-vnc");
if (root && root.dataset.enabled === "true") {
  import(root.dataset.novnc).then(function (module) {
    setup(root, module.default);
  }).catch(function (err) {
    const statusEl = document.getElementById("vnc-status");
    statusEl.textContent = "noVNC failed to load";
    statusEl.className = "badge text-bg-danger";
    document.getElementById("vnc-detail").textContent = String(err);
  });
} else if (root) {
  const statusEl = document.getElementById("vnc-status");
  statusEl.textContent = "unavailable";
  statusEl.dataset.state = "no-vnc";
  root.dataset.vncState = "no-vnc";
}
