/* Accessible names for the Django admin's own widgets that render without one
 * (templates/admin/base_site.html loads this on every admin page):
 * - the date and the time input of a split date-time field (the field's label names neither),
 * - the inputs and selects of a tabular inline row (only the column header names them),
 * - select2 autocomplete boxes (their name points at the empty selection),
 * - the filter widget's help icon (an aria-label on a span with no role).
 * Idempotent; re-run when rows are added ("Add another") or select2 draws a box. */
(function () {
  "use strict";

  function text(element) {
    return element ? element.textContent.replace(/\s+/g, " ").replace(/[:*]\s*$/, "").trim() : "";
  }

  function name(element, label) {
    if (label && !element.hasAttribute("aria-label") && !element.hasAttribute("aria-labelledby")) {
      element.setAttribute("aria-label", label);
    }
  }

  function splitDateTimes() {
    document.querySelectorAll("p.datetime").forEach(function (paragraph) {
      var inputs = paragraph.querySelectorAll("input.vDateField, input.vTimeField");
      var row = paragraph.closest(".form-row, .fieldBox, td");
      var label = row ? text(row.querySelector("label")) : "";
      if (!label && row && row.tagName === "TD") { label = columnHeader(row); }
      inputs.forEach(function (input) {
        name(input, (label ? label + ": " : "") + (input.classList.contains("vDateField") ? "date" : "time"));
      });
    });
  }

  function columnHeader(cell) {
    var table = cell.closest("table");
    if (!table) { return ""; }
    var index = Array.prototype.indexOf.call(cell.parentNode.children, cell);
    var header = table.querySelectorAll("thead tr:last-child th")[index];
    return header ? text(header) : "";
  }

  function tabularInlines() {
    document.querySelectorAll(".tabular table tbody tr.form-row").forEach(function (row, position) {
      var prefix = row.id ? row.id.replace(/-(\d+)$/, function (_, n) { return " " + (Number(n) + 1); }) : "";
      row.querySelectorAll("td").forEach(function (cell) {
        var header = columnHeader(cell);
        if (!header) { return; }
        cell.querySelectorAll("input:not([type=hidden]), select, textarea").forEach(function (field) {
          if (field.labels && field.labels.length) { return; }
          name(field, header + (prefix ? ", " + prefix : " (row " + (position + 1) + ")"));
        });
      });
    });
  }

  function select2Boxes() {
    document.querySelectorAll(".select2-selection[role=combobox]").forEach(function (box) {
      var container = box.closest(".select2");
      var select = container && container.previousElementSibling;
      if (!select || select.tagName !== "SELECT") { return; }
      var label = select.getAttribute("aria-label") || (select.labels && select.labels.length ? text(select.labels[0]) : "");
      if (label && box.getAttribute("aria-label") !== label) {
        box.setAttribute("aria-label", label);
        box.removeAttribute("aria-labelledby");
      }
      box.querySelectorAll("[role=textbox]").forEach(function (shown) { name(shown, label); });
    });
  }

  function helpIcons() {
    document.querySelectorAll("span.help-tooltip[aria-label]:not([role])").forEach(function (icon) {
      icon.setAttribute("role", "img");
    });
  }

  function run() {
    splitDateTimes();
    tabularInlines();
    select2Boxes();
    helpIcons();
  }

  var pending = false;
  function soon() {
    if (pending) { return; }
    pending = true;
    window.setTimeout(function () { pending = false; run(); }, 50);
  }

  document.addEventListener("DOMContentLoaded", function () {
    run();
    new MutationObserver(soon).observe(document.body, { childList: true, subtree: true });
  });
  window.addEventListener("load", run);
}());
