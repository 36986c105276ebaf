// Marks the fields that a choice makes required (bold label, aria-required), as the server
// will ask for them on save. A select names them in data-requires: {"field": ["choice", ...]}.
// Served from static: the Content-Security-Policy allows no inline script.
(function () {
  "use strict";

  function update(select) {
    var rules = JSON.parse(select.getAttribute("data-requires") || "{}");
    Object.keys(rules).forEach(function (name) {
      var required = rules[name].indexOf(select.value) !== -1;
      var input = document.getElementById("id_" + name);
      var label = document.querySelector('label[for="id_' + name + '"]');
      if (label) {
        label.classList.toggle("required", required);
      }
      if (input) {
        input.setAttribute("aria-required", required ? "true" : "false");
      }
    });
  }

  function init() {
    document.querySelectorAll("select[data-requires]").forEach(function (select) {
      update(select);
      select.addEventListener("change", function () { update(select); });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
