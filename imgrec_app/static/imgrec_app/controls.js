/* imgrec shopper controls: the forms work without this script (a plain POST and a redirect);
   with it, "Not interested" hides the item in place and offers an undo. No inline code: CSP-safe. */
(function () {
  "use strict";
  if (window.imgrecControls) { return; }
  window.imgrecControls = true;

  function post(form, extra) {
    var body = new FormData(form);
    Object.keys(extra || {}).forEach(function (k) { body.set(k, extra[k]); });
    return fetch(form.action, {
      method: "POST", body: body, credentials: "same-origin",
      headers: {"Accept": "application/json", "X-CSRFToken": body.get("csrfmiddlewaretoken") || ""}
    }).then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.matches || !form.matches("form[data-imgrec-control='not-interested']")) { return; }
    event.preventDefault();
    var item = form.closest(".imgrec-shelf__item");
    post(form).then(function () {
      if (!item) { return; }
      var undo = document.createElement("button");
      undo.type = "button";
      undo.className = "imgrec-shelf__undo";
      undo.textContent = form.dataset.undoLabel || "Undo";
      var kept = Array.prototype.slice.call(item.children);
      kept.forEach(function (child) { child.hidden = true; });
      item.classList.add("imgrec-shelf__item--dismissed");
      item.appendChild(undo);
      undo.addEventListener("click", function () {
        post(form, {undo: "1"}).then(function () {
          undo.remove();
          item.classList.remove("imgrec-shelf__item--dismissed");
          kept.forEach(function (child) { child.hidden = false; });
        });
      });
    }).catch(function () { form.submit(); });
  });
})();
