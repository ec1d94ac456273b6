// The editor: highlighting as you type, the server's check (debounced), the diff, and the save with If-Match.
// Without this script the page still works: the form posts the text to /save, which checks it and answers.
(function () {
  "use strict";
  var root = document.body.dataset.root, csrf = document.body.dataset.csrf;
  var form = document.getElementById("editor-form");
  var source = document.getElementById("source");
  var overlay = document.getElementById("highlight");
  var summary = document.getElementById("check-summary");
  var list = document.getElementById("diagnostics");
  var reviewButton = document.getElementById("review-button");
  var saveButton = document.getElementById("save-button");
  var revertButton = document.getElementById("revert-button");
  var diffSection = document.getElementById("diff-section");
  var diffBox = document.getElementById("diff");
  var status = document.getElementById("save-status");
  var versionNote = document.getElementById("version-note");
  var version = form.dataset.version;
  var diagnostics = [], lastCheck = null, timer = null, sequence = 0;

  function api(path, options) {
    options = options || {};
    options.credentials = "same-origin";
    options.headers = Object.assign({ "content-type": "application/json", "x-csrf-token": csrf }, options.headers || {});
    return fetch(root + path, options);
  }

  function paint() {
    overlay.innerHTML = window.highlightRoutes(source.value, diagnostics); // escaped by highlightRoutes
    overlay.scrollTop = source.scrollTop;
    overlay.scrollLeft = source.scrollLeft;
  }

  function showCheck(check) {
    lastCheck = check;
    diagnostics = check.diagnostics;
    var tests = check.tests ? ", " + (check.tests - check.failed_tests) + " of " + check.tests + " test(s) passed" : "";
    summary.className = "check-summary " + (check.ok ? "ok-box" : "problem");
    summary.textContent = (check.ok ? "The file passes the check" : "The file fails the check") + ": " +
      check.errors + " error(s), " + check.warnings + " warning(s)" + tests + ".";
    list.textContent = "";
    check.diagnostics.forEach(function (d) {
      var li = document.createElement("li");
      li.className = d.severity;
      var a = document.createElement("a");
      a.href = "#";
      a.dataset.line = d.line;
      a.dataset.column = d.column;
      a.textContent = (d.file ? d.file + ":" : "") + d.line + ":" + d.column;
      li.appendChild(a);
      li.appendChild(document.createTextNode(" "));
      var strong = document.createElement("strong");
      strong.textContent = d.severity;
      li.appendChild(strong);
      li.appendChild(document.createTextNode(": " + d.message));
      if (d.hint) {
        var hint = document.createElement("span");
        hint.className = "hint";
        hint.textContent = " hint: " + d.hint;
        li.appendChild(hint);
      }
      list.appendChild(li);
    });
    saveButton.disabled = !check.ok;
    paint();
  }

  function check() {
    var mine = ++sequence;
    api("/api/check", { method: "POST", body: JSON.stringify({ text: source.value }) })
      .then(function (r) { return r.json(); })
      .then(function (result) { if (mine === sequence && result.diagnostics) showCheck(result); })
      .catch(function () {});
  }

  function renderDiff(text) {
    diffBox.textContent = "";
    if (!text) { diffBox.textContent = "No change."; return; }
    text.split("\n").forEach(function (line) {
      var span = document.createElement("span");
      if (line.startsWith("+")) span.className = "add";
      else if (line.startsWith("-")) span.className = "del";
      else if (line.startsWith("@@")) span.className = "hunk";
      span.textContent = line;
      diffBox.appendChild(span);
      diffBox.appendChild(document.createTextNode("\n"));
    });
  }

  function say(text, ok) {
    status.className = ok === undefined ? "" : ok ? "ok-box" : "problem";
    status.textContent = text;
  }

  function waitForReload(tableVersion, tries) {
    api("/api/status?table=" + encodeURIComponent(tableVersion)).then(function (r) { return r.json(); }).then(function (s) {
      if (s.state === "ok") say("Saved and reloaded: now serving " + s.version + (s.summary ? " — " + s.summary : "") + ".", true);
      else if (s.state === "rejected") say("Saved, but the reload was rejected: " + s.summary, false);
      else if (tries > 0) setTimeout(function () { waitForReload(tableVersion, tries - 1); }, 250);
      else say("Saved; the reload has not happened yet (see History).", true);
    });
  }

  function review(event) {
    if (event) event.preventDefault();
    api("/api/diff", { method: "POST", body: JSON.stringify({ text: source.value }) })
      .then(function (r) { return r.json(); })
      .then(function (d) {
        diffSection.hidden = false;
        renderDiff(d.diff);
        saveButton.hidden = false;
        saveButton.disabled = !(lastCheck && lastCheck.ok) || !d.diff;
        if (lastCheck && !lastCheck.ok) say("The file fails the check: it cannot be saved until it passes.", false);
        else say("");
      });
  }

  function save() {
    saveButton.disabled = true;
    say("Saving…");
    api("/api/file", { method: "PUT", headers: { "if-match": '"' + version + '"' }, body: JSON.stringify({ text: source.value }) })
      .then(function (r) { return r.json().then(function (body) { return [r.status, body]; }); })
      .then(function (answer) {
        var code = answer[0], body = answer[1];
        if (code === 200) {
          version = body.version;
          document.getElementById("editor-version").value = version;
          versionNote.textContent = "version " + version;
          diffSection.hidden = true;
          saveButton.hidden = true;
          say("Saved; waiting for the reload…", true);
          waitForReload(body.table_version, 40);
        } else if (code === 412) {
          say("Conflict: " + body.error, false);
          diffSection.hidden = false;
          renderDiff(body.diff || "");
          revertButton.hidden = false;
        } else {
          if (body.check) showCheck(body.check);
          say((code === 422 ? "Not saved: " : "Not saved (" + code + "): ") + body.error, false);
          saveButton.disabled = false;
        }
      })
      .catch(function (e) { say("Not saved: " + e, false); saveButton.disabled = false; });
  }

  function revert() {
    if (!window.confirm("Replace your text with the file on disk? Your changes in this editor are lost.")) return;
    api("/api/file").then(function (r) { return r.json(); }).then(function (f) {
      source.value = f.text;
      version = f.version;
      document.getElementById("editor-version").value = version;
      versionNote.textContent = "version " + version;
      revertButton.hidden = true;
      diffSection.hidden = true;
      say("");
      paint();
      check();
    });
  }

  source.addEventListener("input", function () {
    paint();
    clearTimeout(timer);
    timer = setTimeout(check, 300);
  });
  source.addEventListener("scroll", function () {
    overlay.scrollTop = source.scrollTop;
    overlay.scrollLeft = source.scrollLeft;
  });
  list.addEventListener("click", function (event) {
    var link = event.target.closest("a[data-line]");
    if (!link) return;
    event.preventDefault();
    var lines = source.value.split("\n"), offset = 0;
    for (var i = 0; i < Number(link.dataset.line) - 1 && i < lines.length; i++) offset += lines[i].length + 1;
    offset += Number(link.dataset.column) - 1;
    source.focus();
    source.setSelectionRange(offset, offset);
  });
  form.addEventListener("submit", review);
  saveButton.addEventListener("click", save);
  revertButton.addEventListener("click", revert);

  // the everyday forms: an existing name fills in what the file says
  var data = JSON.parse(document.getElementById("form-data").textContent);
  function prefill(input, table, fields) {
    input.addEventListener("change", function () {
      var found = table[input.value];
      if (!found) return;
      Object.keys(fields).forEach(function (field) {
        var target = document.getElementById(fields[field]);
        if (target && found[field] !== undefined) target.value = found[field];
      });
    });
  }
  prefill(document.getElementById("p-name"), data.provider, { type: "p-type", url: "p-url", key: "p-key" });
  prefill(document.getElementById("m-name"), data.model, { target: "m-target", context: "m-context",
    max_output: "m-max", price_input: "m-in", price_output: "m-out", cache_write_5m: "m-cw5", cache_write_1h: "m-cw1",
    cache_read: "m-cr", web_search: "m-ws" });
  var rules = {};
  data.rule.forEach(function (r) { rules[String(r.number)] = r; });
  prefill(document.getElementById("r-index"), rules, { condition: "r-condition", target: "r-target" });
  var chains = {};
  Object.keys(data.fallback).forEach(function (head) { chains[head] = { chain: data.fallback[head].join(" -> ") }; });
  prefill(document.getElementById("f-head"), chains, { chain: "f-chain" });

  form.classList.add("enhanced");
  if (lastCheck === null) check();
  paint();
})();
