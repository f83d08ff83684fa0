/* The colour theme, set before the page paints: the choice stored by the switch in the
 * navigation ("light" or "dark"), else the browser's setting ("auto"). */
(function () {
  "use strict";
  const KEY = "xenweb-theme";
  const media = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  function stored() {
    try { return localStorage.getItem(KEY) || "auto"; } catch (e) { return "auto"; }
  }
  function apply(choice) {
    const dark = choice === "dark" || (choice === "auto" && media && media.matches);
    document.documentElement.setAttribute("data-bs-theme", dark ? "dark" : "light");
    document.documentElement.dataset.themeChoice = choice;
  }
  apply(stored());
  if (media && media.addEventListener) {
    media.addEventListener("change", function () { apply(stored()); });
  }
  // The switch: auto → dark → light → auto.
  const NEXT = { auto: "dark", dark: "light", light: "auto" };
  const LABEL = { auto: "Theme: as the browser", dark: "Theme: dark", light: "Theme: light" };
  const ICON = { auto: "bi-circle-half", dark: "bi-moon-stars", light: "bi-sun" };
  function label(button) {
    const choice = stored();
    button.title = LABEL[choice];
    button.setAttribute("aria-label", LABEL[choice]);
    const icon = button.querySelector("i");
    if (icon) icon.className = "bi " + ICON[choice];
  }
  document.addEventListener("DOMContentLoaded", function () {
    const button = document.getElementById("theme-switch");
    if (!button) return;
    label(button);
    button.addEventListener("click", function () {
      const choice = NEXT[stored()] || "auto";
      try { localStorage.setItem(KEY, choice); } catch (e) { /* private mode: this page only */ }
      apply(choice);
      label(button);
    });
  });
})();
