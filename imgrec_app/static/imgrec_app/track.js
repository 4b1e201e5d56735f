/* imgrec measured shelves: marks a server-rendered shelf as "seen" once half of it has been in
 * view, with one navigator.sendBeacon per shelf to its data-imgrec-beacon URL (form-encoded, the
 * page's CSRF token in the body).  The impression itself was recorded when the shelf was
 * rendered; without this script (or JavaScript) a shelf is counted but never "seen".  Shelves
 * added later (lazy fragments) are picked up too.  No inline code: CSP-safe; safe to include
 * several times. */
(function () {
  "use strict";
  if (window.imgrecTrack) { return; }
  window.imgrecTrack = true;

  function send(el) {
    if (el.dataset.imgrecSeen) { return; }
    el.dataset.imgrecSeen = "1";
    var body = new URLSearchParams();
    body.set("rec_id", el.dataset.imgrecRec);
    body.set("csrfmiddlewaretoken", el.dataset.imgrecCsrf || "");
    var blob = new Blob([body.toString()], {type: "application/x-www-form-urlencoded"});
    if (!(navigator.sendBeacon && navigator.sendBeacon(el.dataset.imgrecBeacon, blob))) {
      fetch(el.dataset.imgrecBeacon, {method: "POST", body: body, credentials: "same-origin", keepalive: true})
        .catch(function () {});
    }
  }

  var observer = "IntersectionObserver" in window ? new IntersectionObserver(function (entries) {
    entries.forEach(function (entry) {
      if (entry.isIntersecting) { observer.unobserve(entry.target); send(entry.target); }
    });
  }, {threshold: 0.5}) : null;

  function watch(root) {
    var shelves = (root.querySelectorAll ? root.querySelectorAll("[data-imgrec-rec][data-imgrec-beacon]") : []);
    Array.prototype.forEach.call(shelves, function (el) {
      if (el.dataset.imgrecWatched) { return; }
      el.dataset.imgrecWatched = "1";
      if (observer) { observer.observe(el); } else { send(el); }
    });
  }

  function start() {
    watch(document);
    new MutationObserver(function (records) {
      records.forEach(function (r) { Array.prototype.forEach.call(r.addedNodes, function (n) {
        if (n.nodeType === 1) { watch(n.parentNode || n); }
      }); });
    }).observe(document.body, {childList: true, subtree: true});
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
