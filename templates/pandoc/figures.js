// Draws the report's interactive figures (included once in the HTML header, after plotly.js).
// Each figure is a div.plotly-figure#plot-NAME followed by a JSON script element of class
// plotly-spec with data-target="plot-NAME" holding {data, layout, config}.
// Figures are drawn one per task, in page order (the page stays responsive while a long
// report draws); when all are drawn, <html data-figures-drawn="N"> is set.
// (No closing script tag may appear in this file: it is inlined in a script element.)
(function () {
  function drawAll() {
    var specs = Array.prototype.slice.call(document.querySelectorAll("script.plotly-spec"));
    var i = 0;
    function next() {
      if (i >= specs.length) {
        // milliseconds from navigation to the last figure (the browser test prints it)
        document.documentElement.setAttribute("data-figures-ms", String(Math.round(performance.now())));
        document.documentElement.setAttribute("data-figures-drawn", String(specs.length));
        return;
      }
      var script = specs[i++];
      var el = document.getElementById(script.getAttribute("data-target"));
      if (el && !el.getAttribute("data-drawn")) {
        var spec = JSON.parse(script.textContent);
        Plotly.newPlot(el, spec.data, spec.layout, spec.config || {});
        el.setAttribute("data-drawn", "1");
      }
      setTimeout(next, 0);
    }
    next();
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", drawAll);
  } else {
    drawAll();
  }
})();
