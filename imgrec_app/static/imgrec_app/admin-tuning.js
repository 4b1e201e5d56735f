/* imgrec admin, tuning run page: follows a run's progress. Configured through data- attributes of
 * #imgrec-tune-progress: data-url (the run's progress JSON), data-poll ("1" while the run is not
 * finished). No inline code, so a strict Content-Security-Policy is fine. */
(function () {
  "use strict";
  var box = document.getElementById("imgrec-tune-progress");
  if (!box || box.dataset.poll !== "1") { return; }
  function tick() {
    fetch(box.dataset.url, {credentials: "same-origin"}).then(function (r) { return r.json(); }).then(function (p) {
      document.getElementById("imgrec-tune-bar").value = p.progress;
      document.getElementById("imgrec-tune-text").textContent =
        p.status_label + " " + p.stage + (p.message ? " · " + p.message : "");
      if (p.finished) { window.location.reload(); } else { setTimeout(tick, 2000); }
    }).catch(function () { setTimeout(tick, 5000); });
  }
  setTimeout(tick, 2000);
})();
