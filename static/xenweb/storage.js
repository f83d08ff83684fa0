/* Storage pages: pool form fields by type, and volume uploads (PUT the file to the API).
 * Upload progress comes from the upload job's updates on /ws/events/ (app.js renders any
 * element whose data-job-row names the job); the answer of the PUT is the job record. */
(function () {
  "use strict";

  // ---- create-pool form: show the fields of the chosen type ------------------------------
  function showTypeFields(form) {
    const type = form.querySelector("[name=type]").value;
    form.querySelectorAll("[data-types]").forEach(function (el) {
      const on = el.dataset.types.split(" ").indexOf(type) >= 0;
      el.classList.toggle("d-none", !on);
      el.querySelectorAll("input, select, textarea").forEach(function (input) { input.disabled = !on; });
    });
  }

  // ---- uploads --------------------------------------------------------------------------
  function csrfToken() {
    const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    if (m) return decodeURIComponent(m[1]);
    try { return JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRFToken"]; } catch (e) { return ""; }
  }

  // Leaving the page would abort an upload: the browser asks first while one runs.
  let uploading = 0;
  window.addEventListener("beforeunload", function (ev) {
    if (uploading > 0) { ev.preventDefault(); ev.returnValue = ""; }
  });

  function upload(form) {
    const file = form.querySelector("input[type=file]").files[0];
    if (!file) return;
    uploading += 1;
    const box = form.querySelector(".upload-progress");
    const result = form.querySelector(".upload-result");
    const button = form.querySelector("button[type=submit]");
    const volumeId = form.dataset.volume;
    box.classList.remove("d-none");
    result.textContent = "Sending " + file.name + " (" + window.xenweb.humanBytes(file.size) + ")…";
    button.disabled = true;
    // Adopt the upload's job as soon as the server announces it, so app.js renders its updates.
    function adopt(ev) {
      const msg = ev.detail;
      if (msg.type !== "job.update" || !msg.job || box.dataset.jobRow) return;
      if (msg.job.target_type === "storage.volume" && String(msg.job.target_id) === volumeId &&
          /upload/.test(msg.job.kind || "")) {
        box.dataset.jobRow = String(msg.job.id);
        window.xenweb.renderJob(box, msg.job);
      }
    }
    document.addEventListener("xenweb:event", adopt);
    fetch(form.dataset.url, {
      method: "PUT", body: file, credentials: "same-origin",
      headers: { "Content-Type": "application/octet-stream", "X-CSRFToken": csrfToken() },
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        return { status: response.status, body: body };
      });
    }).then(function (answer) {
      const body = answer.body || {};
      if (body.id && body.state) {  // a job record
        box.dataset.jobRow = String(body.id);
        window.xenweb.renderJob(box, body);
        const done = body.state === "succeeded";
        result.innerHTML = "";
        const link = document.createElement("a");
        link.href = body.page_url || ("/jobs/" + body.id + "/");
        link.textContent = "job #" + body.id;
        result.append(done ? "Uploaded: " : "Upload " + body.state + ": ", link);
        if (done) setTimeout(function () { location.reload(); }, 1500);
      } else {
        result.textContent = "Upload refused (" + answer.status + "): " + (body.detail || "no detail");
        result.classList.add("text-danger");
      }
      if (form.dataset.createdVolume && !(body.state === "succeeded")) {
        // The volume made for this upload holds nothing useful: it goes again.
        api("DELETE", "/api/v1/volumes/" + form.dataset.createdVolume + "/");
        result.append(" The new volume was removed again.");
      }
    }).catch(function (err) {
      result.textContent = "Upload failed: " + err;
      result.classList.add("text-danger");
    }).finally(function () {
      uploading -= 1;
      button.disabled = false;
      document.removeEventListener("xenweb:event", adopt);
    });
  }

  window.xenwebUploads = function () { return uploading; };

  // ---- a file uploaded as a new volume: created with the file's size, then filled -----------
  // A qcow2 file says its virtual size in its header (bytes 24-31, big-endian); any other
  // file is raw (an ISO image too) and as big as the file.
  function imageShape(file) {
    return file.slice(0, 32).arrayBuffer().then(function (head) {
      const view = new DataView(head);
      if (head.byteLength >= 32 && view.getUint32(0) === 0x514649fb) {
        return { format: "qcow2", size: Number(view.getBigUint64(24)) };
      }
      return { format: "raw", size: file.size };
    });
  }

  function api(method, url, body) {
    return fetch(url, {
      method: method, credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: body === undefined ? undefined : JSON.stringify(body),
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (b) { return { status: r.status, body: b }; });
    });
  }

  function uploadAsNewVolume(form) {
    const file = form.querySelector("input[type=file]").files[0];
    if (!file) return;
    const result = form.querySelector(".upload-result");
    form.querySelector(".upload-progress").classList.remove("d-none");
    result.classList.remove("text-danger");
    const name = form.querySelector("[name=name]").value.trim() || file.name;
    imageShape(file).then(function (shape) {
      result.textContent = "Creating " + name + " (" + shape.format + ", " + window.xenweb.humanBytes(shape.size) + ")…";
      return api("POST", "/api/v1/volumes/", { pool: Number(form.dataset.pool), name: name,
                                               size: shape.size, format: shape.format });
    }).then(function (answer) {
      if (answer.status !== 201 && answer.status !== 202) {
        const body = answer.body || {};
        result.textContent = "The volume was not created (" + answer.status + "): " +
          (body.detail || Object.values(body).flat().join(" ") || "no detail");
        result.classList.add("text-danger");
        return;
      }
      const volume = answer.body.id || (answer.body.result && answer.body.result.volume);
      form.dataset.volume = String(volume);
      form.dataset.url = "/api/v1/volumes/" + volume + "/content/";
      form.dataset.createdVolume = String(volume);
      upload(form);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    const poolForm = document.getElementById("pool-create-form");
    if (poolForm) {
      poolForm.querySelector("[name=type]").addEventListener("change", function () { showTypeFields(poolForm); });
      showTypeFields(poolForm);
    }
    document.querySelectorAll("form.volume-upload").forEach(function (form) {
      form.addEventListener("submit", function (ev) {
        ev.preventDefault();
        if (form.id === "volume-upload-new") uploadAsNewVolume(form); else upload(form);
      });
    });
  });
})();
