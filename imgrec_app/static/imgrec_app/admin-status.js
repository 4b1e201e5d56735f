/* imgrec admin, index status page: asks for confirmation on buttons with data-imgrec-confirm and
 * follows a re-index run.  Configured through data- attributes of #imgrec-progress:
 *   data-url       the run's progress JSON
 *   data-poll      "1" while the run is not finished
 *   data-text      the progress line, with {ready} {failed} {remaining} {total} {rate}
 *   data-eta       appended when an ETA is known, with {eta}
 *   data-finished  appended once the run is finished
 * (translated on the server, so this file has no user-facing text of its own). */
(function () {
  "use strict";
  function format(template, values) {
    return template.replace(/\{(\w+)\}/g, function (all, key) {
      return Object.prototype.hasOwnProperty.call(values, key) ? String(values[key]) : all;
    });
  }
  function confirmButtons() {
    Array.prototype.forEach.call(document.querySelectorAll("[data-imgrec-confirm]"), function (button) {
      button.addEventListener("click", function (event) {
        if (!window.confirm(button.dataset.imgrecConfirm)) { event.preventDefault(); }
      });
    });
  }
  function followProgress() {
    var box = document.getElementById("imgrec-progress");
    if (!box || box.dataset.poll !== "1") { return; }
    var bar = document.getElementById("imgrec-bar");
    var text = document.getElementById("imgrec-text");
    function tick() {
      fetch(box.dataset.url, {credentials: "same-origin"})
        .then(function (r) { return r.json(); })
        .then(function (p) {
          bar.max = p.total;
          bar.value = p.ready + p.failed;
          var line = format(box.dataset.text, p);
          if (p.eta) { line += format(box.dataset.eta, p); }
          if (p.finished) { line += box.dataset.finished; }
          text.textContent = line;
          if (!p.finished) { setTimeout(tick, 2000); }
        })
        .catch(function () { setTimeout(tick, 5000); });
    }
    setTimeout(tick, 2000);
  }
  function start() { confirmButtons(); followProgress(); }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
