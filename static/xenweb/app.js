/* xenweb front end: confirmation dialogs, live events and live job progress.
 * Websocket messages are hints; on every (re)connect the server sends the current record. */
(function () {
  "use strict";

  // ---- formatting -------------------------------------------------------------------
  const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];
  function humanBytes(n) {
    let i = 0;
    while (n >= 1024 && i < UNITS.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + UNITS[i];
  }
  function humanAmount(n, unit) { return unit === "bytes" ? humanBytes(n) : String(n); }
  function humanRate(rate, unit) {
    if (rate === null || rate === undefined) return "–";
    return unit === "bytes" ? humanBytes(rate) + "/s" : rate.toFixed(2) + " steps/s";
  }
  function humanEta(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    seconds = Math.round(seconds);
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    return (h ? h + "h " : "") + (h || m ? m + "m " : "") + s + "s";
  }
  const STATE_CLASS = {
    queued: "secondary", running: "primary", succeeded: "success", failed: "danger",
    cancelled: "warning", interrupted: "danger",
  };

  // ---- websockets with reconnect ----------------------------------------------------------
  function socketUrl(path) {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
  }
  function liveSocket(path, onMessage) {
    let delay = 500, banner = document.getElementById("live-banner"), timer = null;
    function connect() {
      const ws = new WebSocket(socketUrl(path));
      ws.onopen = function () { delay = 500; clearTimeout(timer); banner && banner.classList.add("d-none"); };
      ws.onmessage = function (ev) { onMessage(JSON.parse(ev.data)); };
      ws.onclose = function (ev) {
        if (ev.code >= 4400 && ev.code < 4500) return; // refused: do not hammer the server
        timer = setTimeout(function () { banner && banner.classList.remove("d-none"); }, 2000);
        setTimeout(connect, delay);
        delay = Math.min(delay * 2, 10000);
      };
    }
    connect();
  }

  // ---- job progress ---------------------------------------------------------------------
  const ENDED = ["succeeded", "failed", "cancelled", "interrupted"];

  function renderJob(root, job) {
    // A job never leaves an end state (a retry is a new job): a progress hint that arrives
    // after the final message is stale.
    if (ENDED.indexOf(root.dataset.jobState) >= 0 && ENDED.indexOf(job.state) < 0) return;
    const set = function (sel, text) { root.querySelectorAll(sel).forEach(function (el) { el.textContent = text; }); };
    const bar = root.querySelector(".job-bar");
    if (bar) {
      // No total while running: the work reports no progress (a wipe); say so, do not fake it.
      const unknown = job.state === "running" && !job.total;
      bar.style.width = unknown ? "100%" : job.percent + "%";
      if (unknown) bar.removeAttribute("aria-valuenow"); else bar.setAttribute("aria-valuenow", job.percent);
      bar.textContent = unknown ? "no progress reported" : job.percent + "%";
      bar.classList.toggle("progress-bar-animated", job.state === "running");
      bar.classList.toggle("progress-bar-striped", job.state === "running" || job.state === "queued");
      bar.className = bar.className.replace(/\bbg-\w+/g, "") + " bg-" + (STATE_CLASS[job.state] || "primary");
    }
    set(".job-percent", job.state === "running" && !job.total ? "unknown"
      : job.percent + "%" + (job.estimated ? " (estimate)" : ""));
    set(".job-state", job.state);
    root.querySelectorAll(".job-state").forEach(function (el) {
      el.className = "badge job-state text-bg-" + (STATE_CLASS[job.state] || "secondary");
    });
    set(".job-message", job.message || "");
    set(".job-done", humanAmount(job.done, job.unit) + (job.total ? " of " + humanAmount(job.total, job.unit) : ""));
    set(".job-rate", humanRate(job.rate, job.unit));
    set(".job-eta", job.state === "running" ? humanEta(job.eta_seconds) : "–");
    set(".job-error", job.error || "");
    const err = root.querySelector(".job-error-box");
    if (err) err.classList.toggle("d-none", !job.error);
    const log = root.querySelector(".job-log");
    if (log && job.log) { log.textContent = job.log.join("\n"); log.scrollTop = log.scrollHeight; }
    const download = root.querySelector(".job-download");
    if (download && job.result && job.result.download) {
      download.href = job.result.download;
      download.classList.remove("d-none");
    }
    const made = root.querySelector(".job-guest");
    if (made && job.result && job.result.guest) {
      made.href = made.dataset.base + encodeURIComponent(job.result.guest) + "/";
      made.classList.remove("d-none");
    }
    root.querySelectorAll(".job-cancel").forEach(function (el) {
      el.classList.toggle("d-none", !(job.state === "queued" || job.state === "running") || !job.cancellable);
    });
    root.dataset.jobState = job.state;
  }

  // The job page's details (started, finished, worker, the result with its links) are the
  // server's rendering, in the appliance's time zone: read again whenever the state changes.
  function refreshJobDetails(root) {
    const details = root.querySelector("#job-details");
    if (!details || !window.htmx) return;
    htmx.ajax("GET", location.pathname, { target: "#job-details", select: "#job-details", swap: "outerHTML" });
  }

  function watchJob(root) {
    let lastSeq = -1;
    liveSocket("/ws/jobs/" + root.dataset.jobId + "/", function (msg) {
      if (msg.type !== "job.update") return;
      const seq = msg.job.seq || 0;
      if (seq === 0) lastSeq = 0; // a fresh snapshot: the truth
      else if (seq < lastSeq) return; // an older hint overtaken by a newer one
      else lastSeq = seq;
      const before = root.dataset.jobState;
      renderJob(root, msg.job);
      if (before !== root.dataset.jobState) refreshJobDetails(root);
    });
  }

  // ---- dashboard / lists: live job rows --------------------------------------------------
  function refreshDashboard() {
    const panel = document.getElementById("dashboard-jobs");
    if (!panel || !window.htmx) return;
    clearTimeout(panel._refresh);
    panel._refresh = setTimeout(function () { htmx.trigger(panel, "refresh"); }, 300);
  }

  const GUEST_STATE_CLASS = { running: "success", paused: "warning", crashed: "danger" };
  const GUEST_STATE_LABEL = { shutoff: "shut off", shutdown: "shutting down",
                              pmsuspended: "suspended by guest" };

  // Guest lists: the row of a guest whose state changed anywhere shows it at once.
  function updateGuestRows(msg) {
    document.querySelectorAll('[data-guest="' + msg.uuid + '"]').forEach(function (row) {
      if (msg.removed) { row.classList.add("text-decoration-line-through", "opacity-50"); return; }
      const badge = row.querySelector(".guest-state");
      if (!badge || !msg.state) return;
      badge.textContent = GUEST_STATE_LABEL[msg.state] || msg.state;
      badge.className = "badge guest-state text-bg-" + (GUEST_STATE_CLASS[msg.state] || "secondary");
    });
  }

  // ---- alerts: the bell's count and a toast for each new one -------------------------------
  function refreshAlertCount() {
    const count = document.getElementById("alert-count");
    if (!count) return;
    fetch("/alerts/count/", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) return;
        count.textContent = String(data.open);
        count.classList.toggle("d-none", data.open === 0);
      })
      .catch(function () { /* the next event tries again */ });
  }
  function showAlert(msg) {
    refreshAlertCount();  // each user's own number: some alerts are not everyone's
    refreshDashboard();
    if (msg.type !== "alert.raised" || !msg.alert) return;
    const box = document.getElementById("alert-toasts");
    if (!box || !window.bootstrap) return;
    const toast = document.createElement("div");
    toast.className = "toast align-items-center text-bg-" + (msg.alert.severity || "secondary") + " border-0";
    toast.setAttribute("role", "alert");
    toast.dataset.alertToast = String(msg.alert.id);
    const row = document.createElement("div");
    row.className = "d-flex";
    const body = document.createElement(msg.alert.link ? "a" : "div");
    body.className = "toast-body text-reset";
    if (msg.alert.link) body.href = msg.alert.link;
    body.textContent = msg.alert.message + (msg.alert.count > 1 ? " (" + msg.alert.count + " times)" : "");
    const close = document.createElement("button");
    close.type = "button";
    close.className = "btn-close btn-close-white me-2 m-auto";
    close.setAttribute("data-bs-dismiss", "toast");
    close.setAttribute("aria-label", "Close");
    row.append(body, close);
    toast.append(row);
    box.append(toast);
    new bootstrap.Toast(toast, { delay: 15000 }).show();
    toast.addEventListener("hidden.bs.toast", function () { toast.remove(); });
  }

  function onEvent(msg) {
    document.dispatchEvent(new CustomEvent("xenweb:event", { detail: msg }));
    if (msg.type === "alert.raised" || msg.type === "alert.acknowledged") {
      showAlert(msg);
      return;
    }
    if (msg.type === "inventory.update") {
      refreshDashboard();
      if (msg.uuid) updateGuestRows(msg);
      return;
    }
    if (msg.type !== "job.update") return;
    const rows = document.querySelectorAll('[data-job-row="' + msg.job.id + '"]');
    rows.forEach(function (row) { renderJob(row, msg.job); });
    const active = msg.job.state === "queued" || msg.job.state === "running";
    // A job appeared or finished: the lists and counts change, so re-read them.
    if ((rows.length > 0) !== active || !active) refreshDashboard();
  }

  // ---- confirmation dialogs ------------------------------------------------------------
  function setupConfirm() {
    const modalEl = document.getElementById("confirm-modal");
    if (!modalEl || !window.bootstrap) return;
    const modal = new bootstrap.Modal(modalEl);
    let pending = null;
    document.addEventListener("submit", function (ev) {
      const form = ev.target;
      if (!form.dataset.confirm || form.dataset.confirmed === "yes") return;
      ev.preventDefault();
      pending = form;
      document.getElementById("confirm-text").textContent = form.dataset.confirm;
      const typed = form.dataset.confirmTyped || "";
      document.getElementById("confirm-typed").classList.toggle("d-none", !typed);
      document.getElementById("confirm-expected").textContent = typed;
      document.getElementById("confirm-input").value = "";
      modal.show();
    });
    document.getElementById("confirm-ok").addEventListener("click", function () {
      if (!pending) return;
      const typed = pending.dataset.confirmTyped || "";
      if (typed && document.getElementById("confirm-input").value !== typed) {
        document.getElementById("confirm-input").classList.add("is-invalid");
        return;
      }
      pending.dataset.confirmed = "yes";
      modal.hide();
      pending.requestSubmit ? pending.requestSubmit() : pending.submit();
    });
  }

  // Filters that apply on change (no inline handlers: the content security policy forbids them).
  document.addEventListener("change", function (ev) {
    if (ev.target.matches && ev.target.matches("select[data-autosubmit]")) ev.target.form.submit();
  });

  document.addEventListener("DOMContentLoaded", function () {
    setupConfirm();
    document.querySelectorAll("[data-job-id]").forEach(watchJob);
    const events = document.body.dataset.eventsWs;
    if (events) liveSocket(events, onEvent);
  });
  window.xenweb = { humanBytes: humanBytes, humanEta: humanEta, renderJob: renderJob };
})();
