/* imgrec lazy shelves: fills each <div class="imgrec-lazy" data-imgrec-url="..."> with the shelf
 * fragment fetched from that URL once the page has loaded.  Loaded with <script defer> by the
 * {% imgrec_lazy_shelf %} tag (no inline script, so it works under script-src 'self'); safe to
 * include several times: each placeholder is fetched once. */
(function () {
  "use strict";
  function load(el) {
    if (el.dataset.imgrecState) { return; }
    el.dataset.imgrecState = "loading";
    fetch(el.dataset.imgrecUrl, {credentials: "same-origin", headers: {"X-Requested-With": "fetch"}})
      .then(function (r) { return r.ok ? r.text() : ""; })
      .then(function (html) { el.innerHTML = html; el.dataset.imgrecState = "loaded"; })
      .catch(function () { el.dataset.imgrecState = "failed"; });
  }
  function loadAll() {
    Array.prototype.forEach.call(document.querySelectorAll(".imgrec-lazy[data-imgrec-url]"), load);
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", loadAll);
  } else {
    loadAll();
  }
})();
