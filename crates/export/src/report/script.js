// segflow report: optional niceties; the page reads the same without them.
(function () {
  "use strict";
  // Print the data tables too: open every <details> for printing, then restore.
  var opened = [];
  window.addEventListener("beforeprint", function () {
    opened = Array.prototype.filter.call(document.querySelectorAll("details:not([open])"), function (d) {
      d.open = true;
      return true;
    });
  });
  window.addEventListener("afterprint", function () {
    opened.forEach(function (d) { d.open = false; });
    opened = [];
  });
  // Sort a table by a column when its header is clicked (numbers by their stored value).
  Array.prototype.forEach.call(document.querySelectorAll("table[data-table] thead th"), function (th) {
    th.setAttribute("aria-sort", "none");
    th.addEventListener("click", function () {
      var table = th.closest("table");
      var body = table.tBodies[0];
      var col = Array.prototype.indexOf.call(th.parentNode.children, th);
      var asc = th.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(th.parentNode.children, function (h) { h.setAttribute("aria-sort", "none"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var key = function (tr) {
        var td = tr.children[col];
        var v = td ? (td.getAttribute("data-value") || td.textContent) : "";
        var n = parseFloat(v);
        return td && td.classList.contains("num") && !isNaN(n) ? n : v;
      };
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        var c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
})();
