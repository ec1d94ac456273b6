// The overview's live parts: the request feed (long polls /api/feed) and "Test" without leaving the page.
(function () {
  "use strict";
  var root = document.body.dataset.root, csrf = document.body.dataset.csrf;
  var feed = document.getElementById("feed");
  var COLUMNS = ["time", "model", "rule", "target", "status", "latency", "tokens", "error"];

  function addRows(rows) {
    var body = feed.tBodies[0];
    var empty = body.querySelector("tr.empty");
    if (empty && rows.length) empty.remove();
    rows.forEach(function (row) {
      var tr = document.createElement("tr");
      COLUMNS.forEach(function (name) {
        var td = document.createElement("td");
        td.textContent = String(row[name]);
        tr.appendChild(td);
      });
      body.insertBefore(tr, body.firstChild);
      feed.dataset.after = row.id;
    });
    while (body.rows.length > 50) body.deleteRow(body.rows.length - 1);
  }

  function poll() {
    fetch(root + "/api/feed?after=" + encodeURIComponent(feed.dataset.after || ""), { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (data) { addRows(data.rows); setTimeout(poll, 200); })
      .catch(function () { setTimeout(poll, 5000); });
  }
  if (feed) poll();

  document.querySelectorAll("form.test-provider").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var button = form.querySelector("button");
      var provider = form.elements.provider.value;
      var out = document.getElementById("probe-result");
      if (!out) {
        out = document.createElement("div");
        out.id = "probe-result";
        out.setAttribute("role", "status");
        var table = document.querySelector("#providers-heading").nextElementSibling;
        table.parentNode.insertBefore(out, table);
      }
      button.disabled = true;
      out.className = "probe";
      out.textContent = "Testing " + provider + "…";
      fetch(root + "/api/test-provider", {
        method: "POST", credentials: "same-origin",
        headers: { "content-type": "application/json", "x-csrf-token": csrf },
        body: JSON.stringify({ provider: provider })
      }).then(function (r) { return r.json(); }).then(function (p) {
        out.className = "probe " + (p.ok ? "ok-box" : "problem");
        var text = "Test of " + p.provider + " (" + p.upstream_model + "): ";
        if (p.ok) {
          text += "ok, status " + p.status + " in " + Math.round(p.latency_ms) + " ms" + (p.answered_by ? ", answered by " + p.answered_by : "");
        } else {
          text += "failed" + (p.status ? ", status " + p.status : "") + ": " + p.error;
        }
        out.textContent = text;
      }).catch(function (e) { out.className = "probe problem"; out.textContent = "The test could not run: " + e; })
        .finally(function () { button.disabled = false; });
    });
  });
})();
