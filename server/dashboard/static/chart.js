// Redraws the chart of events claimed and completed per minute every 10
// seconds from the server's counters (activity.json of the namespace).
(function () {
  "use strict";
  var svg = document.getElementById("chart");
  if (!svg) { return; }
  var ns = "http://www.w3.org/2000/svg";
  function draw(points) {
    var peak = 0;
    points.forEach(function (p) { peak = Math.max(peak, p.claimed, p.completed); });
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    points.forEach(function (p, i) {
      [["claimed", p.claimed], ["completed", p.completed]].forEach(function (c, j) {
        var h = peak ? Math.floor(c[1] * 110 / peak) : 0;
        var r = document.createElementNS(ns, "rect");
        r.setAttribute("class", c[0]);
        r.setAttribute("x", i * 10 + j * 4);
        r.setAttribute("y", 120 - h);
        r.setAttribute("width", 4);
        r.setAttribute("height", h);
        var t = document.createElementNS(ns, "title");
        t.textContent = p.minute.substr(11, 5) + ": " + c[1] + " " + c[0];
        r.appendChild(t);
        svg.appendChild(r);
      });
    });
    var m = document.getElementById("chart-max");
    m.textContent = "peak " + peak + " per minute";
    m.setAttribute("data-max", peak);
    svg.setAttribute("data-drawn", String(Date.now()));
  }
  function poll() {
    fetch(svg.getAttribute("data-src"), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (points) { if (points) { draw(points); } })
      .catch(function () {});
  }
  poll();
  setInterval(poll, 10000);
})();
