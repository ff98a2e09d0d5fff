// An export's page: follow the job's JSON status while it runs, then reload to offer the file (or the error).
(function () {
  "use strict";
  const panel = document.getElementById("export-progress");
  if (!panel) return;
  const rows = document.getElementById("export-rows");
  const bar = document.querySelector("#export-bar > span");
  const barBox = document.getElementById("export-bar");
  const status = document.getElementById("export-status");

  function show(state) {
    rows.textContent = state.percent + "% · " + state.rows_written + " of " + state.rows_total + " rows written";
    bar.style.width = state.percent + "%";
    barBox.title = state.percent + "%";
    const badge = status.querySelector(".badge");
    if (badge) badge.textContent = state.status_display.toLowerCase();
  }

  async function poll() {
    try {
      const response = await fetch(panel.dataset.statusUrl, { headers: { Accept: "application/json" } });
      if (response.ok) {
        const state = await response.json();
        show(state);
        if (state.status === "done" || state.status === "failed") {
          window.location.reload();
          return;
        }
      }
    } catch (error) {
      // A dropped connection: try again at the next tick.
    }
    window.setTimeout(poll, 1000);
  }

  window.setTimeout(poll, 1000);
})();
