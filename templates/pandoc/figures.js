// Draws the report's interactive figures (included once in the HTML header, after plotly.js).
// Each figure is a div.plotly-figure#plot-NAME followed by a JSON script element of class
// plotly-spec with data-target="plot-NAME" holding {data, layout, config}.
// Figures are drawn lazily: a figure is queued when it comes within one screen of the
// viewport (IntersectionObserver), and the queue draws one figure per task, in the order the
// figures came into view, so the figures on screen are drawn first and a long report never
// draws the dozens of figures nobody has scrolled to (without IntersectionObserver, every
// figure is queued at once, in page order). Printing from the browser draws them all first.
// Each drawn figure gets data-draw-ms (its own draw time); when every figure is drawn,
// <html data-figures-drawn="N" data-figures-ms="ms since navigation"> is set.
// window.reportDrawAll() queues every figure not yet drawn (the browser tests use it).
// (No closing script tag may appear in this file: it is inlined in a script element.)
(function () {
  var specs = {}, total = 0, drawn = 0, queue = [], scheduled = false;

  function draw(el) {
    if (el.getAttribute("data-drawn")) return;
    var t0 = performance.now();
    var spec = JSON.parse(specs[el.id].textContent);
    Plotly.newPlot(el, spec.data, spec.layout, spec.config || {});
    el.setAttribute("data-drawn", "1");
    el.setAttribute("data-draw-ms", (performance.now() - t0).toFixed(1));
    drawn++;
    if (drawn === total) {
      document.documentElement.setAttribute("data-figures-ms", String(Math.round(performance.now())));
      document.documentElement.setAttribute("data-figures-drawn", String(total));
    }
  }

  function pump() {
    scheduled = false;
    var el = queue.shift();
    if (el) draw(el);
    if (queue.length) schedule();
  }

  function schedule() {
    if (!scheduled) {
      scheduled = true;
      setTimeout(pump, 0);
    }
  }

  function enqueue(el) {
    if (!el.getAttribute("data-drawn") && queue.indexOf(el) < 0) {
      queue.push(el);
      schedule();
    }
  }

  function figures() {
    return Object.keys(specs).map(function (id) { return document.getElementById(id); });
  }

  window.reportDrawAll = function () { figures().forEach(enqueue); };

  function start() {
    Array.prototype.forEach.call(document.querySelectorAll("script.plotly-spec"), function (s) {
      var id = s.getAttribute("data-target");
      if (document.getElementById(id) && !specs[id]) {
        specs[id] = s;
        total++;
      }
    });
    if (total === 0) {
      document.documentElement.setAttribute("data-figures-ms", "0");
      document.documentElement.setAttribute("data-figures-drawn", "0");
      return;
    }
    if (!("IntersectionObserver" in window)) {
      window.reportDrawAll();
      return;
    }
    var observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (e) {
        if (e.isIntersecting) {
          observer.unobserve(e.target);
          enqueue(e.target);
        }
      });
    }, {rootMargin: "100% 0px"});
    figures().forEach(function (el) { observer.observe(el); });
    window.addEventListener("beforeprint", window.reportDrawAll);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
