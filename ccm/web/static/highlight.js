// The route language's highlighter (docs/language.md): comments, strings, env(), keywords, numbers with units,
// operators. highlightRoutes(text, marks) returns HTML for the editor's overlay: every character of the text
// exactly once (so the overlay lines up with the textarea), all of it escaped. `marks` are the check's diagnostics
// ({line, column, width, severity}), drawn as wavy underlines.
(function () {
  "use strict";
  var KEYWORDS = new Set(("provider model route fallback retry breaker settings test include request expect header " +
    "tokens type url key auth headers timeout concurrency context max_output price force drop quirks balance weight " +
    "default direct and or not websearch subagent background thinking effort image tool on backoff cooldown " +
    "failures off file count_tokens body_limit connect first_byte idle total input output cache_read cache_write " +
    "plan team models markup budget per rpm tpm spent")
    .split(" "));
  var TOKEN = /(#.*$)|("(?:[^"\\]|\\.)*"?)|(env)(?=\s*\()|(->|==|!=|>=|<=|[<>~=])|(\b\d+(?:\.\d+)?(?:ms|kb|mb|gb|[kmsh])?\b)|([A-Za-z_][A-Za-z0-9_\-]*)/g;
  var CLASSES = [null, "tok-comment", "tok-string", "tok-env", "tok-op", "tok-number", null];

  function escapeHtml(text) {
    return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function segments(line) {
    var out = [], last = 0, match;
    TOKEN.lastIndex = 0;
    while ((match = TOKEN.exec(line)) !== null) {
      if (match[0] === "") { TOKEN.lastIndex++; continue; }
      if (match.index > last) out.push([line.slice(last, match.index), null]);
      var cls = null;
      for (var group = 1; group < CLASSES.length; group++) {
        if (match[group] !== undefined) { cls = CLASSES[group]; break; }
      }
      if (match[6] !== undefined && KEYWORDS.has(match[6])) cls = "tok-keyword";
      out.push([match[0], cls]);
      last = match.index + match[0].length;
    }
    if (last < line.length) out.push([line.slice(last), null]);
    return out;
  }

  function renderLine(line, marks) {
    var parts = segments(line);
    if (!marks.length) {
      return parts.map(function (p) { return p[1] ? '<span class="' + p[1] + '">' + escapeHtml(p[0]) + "</span>" : escapeHtml(p[0]); }).join("");
    }
    // split the segments at the marks' edges, then wrap the marked characters
    var html = "", position = 0;
    parts.forEach(function (part) {
      var text = part[0], start = position;
      position += text.length;
      var cuts = [0, text.length];
      marks.forEach(function (m) {
        [m.from - start, m.to - start].forEach(function (c) { if (c > 0 && c < text.length) cuts.push(c); });
      });
      cuts = Array.from(new Set(cuts)).sort(function (a, b) { return a - b; });
      for (var i = 0; i + 1 < cuts.length; i++) {
        var piece = text.slice(cuts[i], cuts[i + 1]), at = start + cuts[i], classes = [];
        if (part[1]) classes.push(part[1]);
        marks.forEach(function (m) { if (at >= m.from && at < m.to) classes.push("diag-" + m.severity); });
        html += classes.length ? '<span class="' + classes.join(" ") + '">' + escapeHtml(piece) + "</span>" : escapeHtml(piece);
      }
    });
    return html;
  }

  window.highlightRoutes = function (text, diagnostics) {
    var byLine = {};
    (diagnostics || []).forEach(function (d) {
      if (d.file) return; // an included file's problem: listed, not drawn here
      var from = Math.max(0, d.column - 1);
      (byLine[d.line] = byLine[d.line] || []).push({ from: from, to: from + Math.max(1, d.width || 1), severity: d.severity });
    });
    var lines = text.split("\n");
    return lines.map(function (line, index) {
      var marks = byLine[index + 1] || [];
      if (marks.length && marks.some(function (m) { return m.from >= line.length; })) line = line + " ";
      return renderLine(line, marks);
    }).join("\n") + "\n";
  };
})();
