// Draws every <div data-plotly="ID"> from the JSON in <script type="application/json" id="ID">.
// Runs on page load and after every htmx swap; no inline scripts (CSP), no eval (plotly's strict bundle).
(function () {
  "use strict";
  var config = {
    responsive: true,
    displaylogo: false,
    modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d"],
    toImageButtonOptions: { format: "png", scale: 2 }
  };

  function draw(root) {
    if (!window.Plotly) return;
    (root || document).querySelectorAll("[data-plotly]").forEach(function (el) {
      var source = document.getElementById(el.getAttribute("data-plotly"));
      if (!source || el.dataset.drawn === source.textContent.length + "") return;
      var spec = JSON.parse(source.textContent);
      var filename = (spec.layout && spec.layout.title && spec.layout.title.text) || "chart";
      var options = Object.assign({}, config, {
        toImageButtonOptions: Object.assign({}, config.toImageButtonOptions, { filename: filename })
      });
      window.Plotly.react(el, spec.data, spec.layout, options);
      el.dataset.drawn = source.textContent.length + "";
    });
  }

  document.addEventListener("DOMContentLoaded", function () { draw(document); });
  document.addEventListener("htmx:afterSettle", function (event) { draw(event.target); });
})();
