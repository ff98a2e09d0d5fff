// Reports: spend per day as stacked bars, one dataset per top spender and one for the rest.
(function () {
  "use strict";
  const data = document.getElementById("spend-series");
  const canvas = document.getElementById("spend-chart");
  if (!window.Chart || !data || !canvas) return;
  const chart = JSON.parse(data.textContent);
  const colours = ["#3b5bdb", "#e8590c", "#2b8a3e", "#ae3ec9", "#1098ad", "#adb5bd"];
  new Chart(canvas, {
    type: "bar",
    data: {
      labels: chart.days,
      datasets: chart.series.map((s, i) => ({
        label: s.label,
        data: s.values,
        backgroundColor: s.label === "Other" ? colours[colours.length - 1] : colours[i % (colours.length - 1)],
      })),
    },
    options: {
      animation: false,
      scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, title: { display: true, text: "USD" } } },
      plugins: {
        tooltip: { callbacks: { label: (item) => item.dataset.label + ": $" +
          item.parsed.y.toLocaleString("en-US", { minimumFractionDigits: 6, maximumFractionDigits: 6 }) } },
      },
    },
  });
})();
