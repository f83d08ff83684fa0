// The migration dialog: preflight from the API on every change, options the target's
// driver has, and the start (POST, session + CSRF) that leads to the job's page.
(function () {
  "use strict";
  const modal = document.getElementById("migrate-modal");
  if (!modal) return;
  const $ = function (id) { return document.getElementById(id); };
  const csrf = modal.querySelector("input[name=csrfmiddlewaretoken]").value;

  function choice() {
    return { host: $("migrate-host").value, mode: $("migrate-mode").value,
             block_copy: $("migrate-blockcopy").checked };
  }

  function showChecks(checks) {
    const list = $("migrate-checks");
    list.replaceChildren();
    checks.forEach(function (c) {
      const li = document.createElement("li");
      li.className = "list-group-item d-flex gap-2" + (c.ok ? "" : " list-group-item-danger");
      li.dataset.check = c.check;
      li.dataset.ok = c.ok ? "1" : "0";
      const icon = document.createElement("i");
      icon.className = "bi " + (c.ok ? "bi-check-circle text-success" : "bi-x-circle text-danger");
      const name = document.createElement("strong");
      name.textContent = c.check + ":";
      const text = document.createElement("span");
      text.textContent = c.message;
      li.append(icon, name, text);
      list.append(li);
    });
  }

  function showFeatures(features) {
    modal.querySelectorAll("[data-feature]").forEach(function (el) {
      el.classList.toggle("d-none", !features[el.dataset.feature] || $("migrate-mode").value !== "live");
    });
    $("migrate-no-abort").classList.toggle("d-none", features.abort || !features.supported);
  }

  function preflight() {
    const c = choice();
    $("migrate-start").disabled = true;
    $("migrate-error").classList.add("d-none");
    $("migrate-blockcopy-warning").classList.toggle("d-none", !c.block_copy);
    if (!c.host) return;
    const query = new URLSearchParams({ host: c.host, mode: c.mode, block_copy: c.block_copy });
    fetch(modal.dataset.preflight + "?" + query, { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (body) {
        showChecks(body.checks || []);
        showFeatures(body.features || {});
        $("migrate-start").disabled = !body.ok;
      });
  }

  function start() {
    const c = choice();
    const body = { host: Number(c.host), mode: c.mode, block_copy: c.block_copy };
    if (c.mode === "live") {
      if ($("migrate-downtime").value) body.max_downtime_ms = Number($("migrate-downtime").value);
      if ($("migrate-bandwidth").value) body.bandwidth_mib = Number($("migrate-bandwidth").value);
      body.auto_converge = $("migrate-autoconverge").checked;
      body.postcopy = $("migrate-postcopy").checked;
    }
    $("migrate-start").disabled = true;
    fetch(modal.dataset.migrate, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify(body),
    }).then(function (r) { return r.json().then(function (j) { return [r.status, j]; }); })
      .then(function (answer) {
        const [status, job] = answer;
        if (status === 202) { window.location = job.page_url; return; }
        if (job.checks && job.checks.length) showChecks(job.checks);
        $("migrate-error").textContent = job.detail || JSON.stringify(job);
        $("migrate-error").classList.remove("d-none");
      });
  }

  ["migrate-host", "migrate-mode", "migrate-blockcopy"].forEach(function (id) {
    $(id).addEventListener("change", preflight);
  });
  $("migrate-start").addEventListener("click", start);
  modal.addEventListener("show.bs.modal", preflight);
})();
