// Performance charts (uPlot): each [data-metrics-url] element draws the named series of
// its URL's answer and redraws when a metrics.update event for its host arrives.
(function () {
  "use strict";
  if (typeof uPlot === "undefined") return;

  const COLORS = ["#0d6efd", "#dc3545", "#198754", "#fd7e14", "#6f42c1", "#20c997"];
  function human(v, unit) {
    if (v === null || v === undefined) return "–";
    if (unit === "%") return v.toFixed(1) + " %";
    if (unit === "B/s") {
      const steps = ["B/s", "KiB/s", "MiB/s", "GiB/s"];
      let i = 0;
      while (Math.abs(v) >= 1024 && i < steps.length - 1) { v /= 1024; i += 1; }
      return v.toFixed(i ? 1 : 0) + " " + steps[i];
    }
    return String(v) + (unit ? " " + unit : "");
  }

  function draw(el) {
    const names = el.dataset.series.split(",");
    const labels = (el.dataset.labels || el.dataset.series).split(",");
    const unit = el.dataset.unit || "";
    fetch(el.dataset.metricsUrl + "?minutes=" + (el.dataset.minutes || 60), { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (body) {
        const data = [body.t].concat(names.map(function (n) { return body.series[n] || []; }));
        const empty = el.parentElement.querySelector(".metrics-empty");
        if (empty) empty.classList.toggle("d-none", body.t.length > 0);
        el.dataset.points = String(body.t.length);
        if (el._plot) { el._plot.setData(data); return; }
        el._plot = new uPlot({
          width: el.clientWidth || 400, height: 160,
          scales: unit === "%" ? { y: { range: [0, 100] } } : {},
          axes: [{}, { values: function (u, vals) { return vals.map(function (v) { return human(v, unit); }); }, size: 70 }],
          series: [{}].concat(names.map(function (n, i) {
            return { label: labels[i], stroke: COLORS[i % COLORS.length], width: 1.5,
                     value: function (u, v) { return human(v, unit); } };
          })),
        }, data, el);
      });
  }

  const charts = Array.from(document.querySelectorAll("[data-metrics-url]"));
  charts.forEach(draw);
  document.addEventListener("xenweb:event", function (ev) {
    const m = ev.detail;
    if (m.type !== "metrics.update") return;
    charts.forEach(function (el) { if (String(m.host) === el.dataset.host) draw(el); });
  });
})();
