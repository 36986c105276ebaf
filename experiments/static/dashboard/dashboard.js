// PrivacyLab dashboard: small progressive enhancements. Every page works without this file.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  // Metric pickers apply on change (the "Show" button is the no-JavaScript path).
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });

  // "Recompute now": while a run is queued, ask the status endpoint until it is done,
  // then reload so every table and chart shows the new run.
  var progress = document.getElementById("recompute-progress");
  if (!progress || progress.dataset.poll !== "1") { return; }
  var url = progress.dataset.statusUrl;
  var message = progress.querySelector(".recompute-message");
  var delay = 1000;

  function show(text, tone) {
    if (!message) {
      message = document.createElement("span");
      message.className = "recompute-message";
      progress.appendChild(message);
    }
    message.textContent = text;
    if (tone) { message.className = "recompute-message tone-" + tone; }
  }

  function poll() {
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok || (response.headers.get("Content-Type") || "").indexOf("application/json") !== 0) {
          throw new Error("status " + response.status);
        }
        return response.json();
      })
      .then(function (status) {
        progress.dataset.state = status.state;
        if (status.state === "done") {
          show("Done: results computed at " + status.snapshot.computed_at_display + ". Reloading…", "good");
          window.location.reload();
          return;
        }
        if (status.state === "failed") {
          var spinner = progress.querySelector(".spinner");
          if (spinner) { spinner.remove(); }
          show(status.message, "bad");
          var button = document.getElementById("recompute-button");
          if (button) { button.disabled = false; }
          return;
        }
        if (status.state === "idle") { return; }
        show(status.message);
        delay = Math.min(delay * 1.5, 10000);
        window.setTimeout(poll, delay);
      })
      .catch(function () {
        show("Lost contact with the server (is your session still valid?). Reload the page to check.", "bad");
      });
  }
  window.setTimeout(poll, delay);
})();
