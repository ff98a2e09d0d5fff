// Dashboard: the requests-per-minute chart and the live feed (pushed over a WebSocket, no polling).
(function () {
  "use strict";
  const series = JSON.parse(document.getElementById("per-minute").textContent);
  const canvas = document.getElementById("rpm-chart");
  let chart = null;
  if (window.Chart && canvas) {
    chart = new Chart(canvas, {
      type: "line",
      data: {
        labels: series.map((p) => p.minute),
        datasets: [
          { label: "requests", data: series.map((p) => p.requests), borderColor: "#3b5bdb", tension: 0.2, pointRadius: 0 },
          { label: "errors", data: series.map((p) => p.errors), borderColor: "#c92a2a", tension: 0.2, pointRadius: 0 },
        ],
      },
      options: { animation: false, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
    });
  }

  function minuteLabel(date) {
    return String(date.getUTCHours()).padStart(2, "0") + ":" + String(date.getUTCMinutes()).padStart(2, "0");
  }

  function count(request) {
    if (!chart) return;
    const label = minuteLabel(new Date(request.time));
    const labels = chart.data.labels;
    if (labels[labels.length - 1] !== label) {
      labels.push(label);
      chart.data.datasets.forEach((d) => d.data.push(0));
      if (labels.length > 60) { labels.shift(); chart.data.datasets.forEach((d) => d.data.shift()); }
    }
    const last = labels.length - 1;
    chart.data.datasets[0].data[last] += 1;
    if (request.status >= 400) chart.data.datasets[1].data[last] += 1;
  }

  function bump(id, by) {
    const element = document.getElementById(id);
    if (element) element.textContent = String(Number(element.textContent) + by);
  }

  // Dollars as the server's |usd filter shows them: thousands separators, a request's cost to the millionth.
  const dollars = new Intl.NumberFormat("en-US", { minimumFractionDigits: 6, maximumFractionDigits: 6 });
  function money(value) {
    const number = Number(value);
    return (number < 0 ? "-$" : "$") + dollars.format(Math.abs(number));
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function row(r) {
    const tr = document.createElement("tr");
    tr.dataset.requestId = r.request_id;
    tr.className = "live";
    const time = cell("");
    const link = document.createElement("a");
    link.href = "/console/audit/?request_id=" + encodeURIComponent(r.request_id);
    link.textContent = r.time.replace("T", " ").slice(0, 19);
    time.appendChild(link);
    tr.append(time, cell(r.client || "–"), cell(r.key_prefix || "–", "mono"), cell(r.agent || "–"),
      cell(r.method + " " + r.path, "mono"));
    const status = cell("", "num");
    const badge = document.createElement("span");
    badge.className = "badge " + (r.status >= 400 ? "bad" : "ok");
    badge.textContent = r.status;
    status.appendChild(badge);
    if (r.error_type) status.append(" " + r.error_type);
    tr.append(status, cell(Number(r.latency_ms).toFixed(1) + " ms", "num"), cell(r.tokens, "num"),
      cell(money(r.cost_usd), "num"));
    return tr;
  }

  const body = document.getElementById("records");
  const status = document.getElementById("feed-status");
  let delay = 1000;

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + "/ws/console/feed/");
    socket.onopen = () => { status.textContent = "live"; status.className = "badge ok"; delay = 1000; };
    socket.onmessage = (event) => {
      const requests = JSON.parse(event.data).requests || [];
      requests.forEach((r) => {
        const empty = body.querySelector("td[colspan]");
        if (empty) empty.parentElement.remove();
        body.prepend(row(r));
        count(r);
        bump("requests-today", 1);
        bump("tokens-today", Number(r.tokens) || 0);
      });
      while (body.children.length > 50) body.lastElementChild.remove();
      if (chart) chart.update("none");
    };
    socket.onclose = () => {
      status.textContent = "reconnecting…"; status.className = "badge warn";
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    };
  }
  if (body && status) connect();
})();
