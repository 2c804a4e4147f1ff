// Draws the report's interactive figures (included once in the HTML header, after plotly.js).
// Each figure is a div.plotly-figure#plot-NAME followed by a JSON script element of class
// plotly-spec with data-target="plot-NAME" holding {data, layout, config}.
// (No closing script tag may appear in this file: it is inlined in a script element.)
(function () {
  function drawAll() {
    var specs = document.querySelectorAll("script.plotly-spec");
    for (var i = 0; i < specs.length; i++) {
      var el = document.getElementById(specs[i].getAttribute("data-target"));
      if (!el || el.getAttribute("data-drawn")) continue;
      var spec = JSON.parse(specs[i].textContent);
      Plotly.newPlot(el, spec.data, spec.layout, spec.config || {});
      el.setAttribute("data-drawn", "1");
    }
    document.documentElement.setAttribute("data-figures-drawn", String(specs.length));
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", drawAll);
  } else {
    drawAll();
  }
})();
