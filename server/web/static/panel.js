/* Namazu panel: draws the plots from the JSON API with plotly.js (served locally). */
(function () {
  "use strict";
  var HOUR = 3600 * 1000;

  function iso(ms) { return new Date(ms).toISOString(); }
  function plotlyDate(text) { return Date.parse(String(text).replace(" ", "T") + "Z"); }
  function status(text) {
    var el = document.getElementById("timeline-status");
    if (el) { el.textContent = text; }
  }

  function timelineFigure(d) {
    var traces = [
      { x: d.activity.t, y: d.activity.v, name: "activity", type: "scatter", mode: "lines",
        connectgaps: false, line: { color: "#24435c", width: 1 } },
      { x: d.baseline.t, y: d.baseline.v, name: "baseline", type: "scatter", mode: "lines",
        connectgaps: false, line: { color: "#2a9d8f", dash: "dash", width: 1.5 } },
      { x: d.threshold.t, y: d.threshold.v, name: "threshold", type: "scatter", mode: "lines",
        connectgaps: false, line: { color: "#e76f51", dash: "dot", width: 1.5 } }
    ];
    if (d.quakes.length) {
      traces.push({
        x: d.quakes.map(function (q) { return q.time_ms; }),
        y: d.quakes.map(function () { return 0.97; }),
        yaxis: "y2", type: "scatter", mode: "markers", name: "earthquakes",
        text: d.quakes.map(function (q) {
          return "M " + q.magnitude + ", " + Math.round(q.distance_km) + " km<br>" + q.event_id;
        }),
        hoverinfo: "text+x",
        marker: {
          size: d.quakes.map(function (q) { return 4 + 3 * Math.max(q.magnitude || 0, 0); }),
          color: d.quakes.map(function (q) { return q.distance_km; }),
          colorscale: "Viridis", reversescale: true, showscale: true,
          colorbar: { title: { text: "km" }, len: 0.5, y: 0.75 }, line: { width: 0.5 }
        }
      });
    }
    var shapes = d.alarms.map(function (a) {
      return { type: "rect", xref: "x", yref: "paper", x0: a.start, x1: a.end, y0: 0, y1: 1,
               fillcolor: "rgba(220, 38, 38, 0.18)", line: { width: 0 }, layer: "below",
               name: "alarm-" + a.id };
    });
    d.events.forEach(function (e) {
      shapes.push({ type: "rect", xref: "x", yref: "paper", x0: e.start, x1: e.end || e.start,
                    y0: 0, y1: 0.04, fillcolor: "rgba(100, 100, 100, 0.5)",
                    line: { width: e.end ? 0 : 2, color: "#555" }, name: "event-" + e.id });
    });
    var layout = {
      margin: { t: 30, r: 60, b: 40, l: 60 },
      xaxis: { type: "date", title: { text: "time (UTC)" } },
      yaxis: { title: { text: "activity ODBA [g]" }, rangemode: "tozero" },
      yaxis2: { overlaying: "y", range: [0, 1], visible: false, fixedrange: true },
      shapes: shapes, legend: { orientation: "h" }, uirevision: "keep",
      annotations: d.events.map(function (e) {
        return { x: e.start, y: 0.05, xref: "x", yref: "paper", text: e.kind,
                 showarrow: false, font: { size: 10 } };
      })
    };
    return { data: traces, layout: layout };
  }

  function loadTimeline(el, startMs, endMs, first) {
    var url = el.dataset.api + "?farm=" + encodeURIComponent(el.dataset.farm) +
      "&series=" + encodeURIComponent(el.dataset.series) +
      "&start=" + encodeURIComponent(iso(startMs)) + "&end=" + encodeURIComponent(iso(endMs)) +
      "&max_points=" + Math.max(200, Math.min(4000, 2 * el.clientWidth));
    status("loading…");
    fetch(url, { credentials: "same-origin" }).then(function (r) {
      if (!r.ok) { return r.json().then(function (e) { throw new Error(e.error || r.status); }); }
      return r.json();
    }).then(function (d) {
      var fig = timelineFigure(d);
      if (!first) { fig.layout.xaxis.range = [iso(startMs), iso(endMs)]; }
      return Plotly.react(el, fig.data, fig.layout, { responsive: true, displaylogo: false })
        .then(function () {
          el.dataset.alarmSpans = String(d.alarms.length);
          el.dataset.points = String(d.activity.t.length);
          el.dataset.rendered = "1";
          status(d.activity.t.length + " points" + (d.downsampled ?
            " (min/max per " + d.bucket_s + " s bucket)" : "") + ", " + d.alarms.length +
            " alarm(s), " + d.quakes.length + " earthquake(s)");
        });
    }).catch(function (err) { status("error: " + err.message); });
  }

  function setupTimeline() {
    var el = document.getElementById("timeline-plot");
    if (!el) { return; }
    var start, end;
    if (el.dataset.aroundStart) {
      start = Date.parse(el.dataset.aroundStart) - 24 * HOUR;
      end = Date.parse(el.dataset.aroundEnd) + 24 * HOUR;
    } else {
      start = Date.parse(el.dataset.start);
      end = Date.parse(el.dataset.end);
    }
    loadTimeline(el, start, end, true);
    var timer = null;
    var attach = function () {
      if (!el.on) { return setTimeout(attach, 100); }
      el.on("plotly_relayout", function (ev) {
        var a = ev["xaxis.range[0]"], b = ev["xaxis.range[1]"];
        if (ev["xaxis.range"]) { a = ev["xaxis.range"][0]; b = ev["xaxis.range"][1]; }
        if (!a || !b) { return; }
        clearTimeout(timer);
        timer = setTimeout(function () {
          loadTimeline(el, plotlyDate(a), plotlyDate(b), false);
        }, 250);
      });
    };
    attach();
  }

  function readJson(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  function setupCatalog() {
    var el = document.getElementById("catalog-map");
    var d = readJson("catalog-data");
    if (!el || !d) { return; }
    var ev = d.events;
    Plotly.newPlot(el, [
      { x: ev.map(function (q) { return q.east_km; }), y: ev.map(function (q) { return q.north_km; }),
        mode: "markers", type: "scatter", name: "epicentres",
        text: ev.map(function (q) { return q.time + "<br>M " + q.magnitude + ", " + q.event_id; }),
        marker: { size: ev.map(function (q) { return 3 + 3 * Math.max(q.magnitude || 0, 0); }),
                  color: ev.map(function (q) { return q.depth_km; }), colorscale: "Portland",
                  showscale: true, colorbar: { title: { text: "depth km" } } } },
      { x: [0], y: [0], mode: "markers+text", text: [d.farm], textposition: "top center",
        marker: { symbol: "triangle-up", size: 14, color: "#111" }, name: "farm" }
    ], {
      margin: { t: 20, r: 20, b: 50, l: 60 },
      xaxis: { title: { text: "east of farm [km]" }, zeroline: true },
      yaxis: { title: { text: "north of farm [km]" }, scaleanchor: "x", zeroline: true },
      showlegend: false
    }, { displaylogo: false }).then(function () { el.dataset.rendered = "1"; });
  }

  function setupEvaluation() {
    var d = readJson("evaluation-data");
    var el = document.getElementById("molchan-plot");
    if (!d || !el || !d.result) { return; }
    var r = d.result;
    var traces = [
      { x: [0, 1], y: [1, 0], mode: "lines", name: "random guess",
        line: { color: "#999", dash: "dash" } },
      { x: d.confidence_curve.map(function (p) { return p.tau; }),
        y: d.confidence_curve.map(function (p) { return p.nu; }),
        mode: "lines", name: "95 % (binomial)", line: { color: "#e76f51" } },
      { x: d.molchan.map(function (p) { return p.tau; }), y: d.molchan.map(function (p) { return p.nu; }),
        text: d.molchan.map(function (p) { return "+" + p.threshold + " %"; }),
        mode: "lines+markers", name: "rule thresholds", line: { color: "#24435c" } },
      { x: [r.alarm_fraction], y: [r.miss_rate], mode: "markers", name: "chosen rule",
        marker: { size: 12, color: "#d00" } }
    ];
    Plotly.newPlot(el, traces, {
      title: { text: "Molchan diagram (N = " + r.targets + ")" },
      xaxis: { title: { text: "alarm fraction τ" }, range: [0, 1] },
      yaxis: { title: { text: "miss rate ν" }, range: [0, 1] },
      margin: { t: 40, r: 20, b: 50, l: 60 }, legend: { x: 0.45, y: 0.98 }
    }, { displaylogo: false }).then(function () { el.dataset.rendered = "1"; });
    var lead = document.getElementById("lead-plot");
    Plotly.newPlot(lead, [{
      x: d.lead_vs_distance.map(function (p) { return p.distance_km; }),
      y: d.lead_vs_distance.map(function (p) { return p.lead_time_h; }),
      text: d.lead_vs_distance.map(function (p) { return "M " + p.magnitude; }),
      mode: "markers", type: "scatter",
      marker: { size: d.lead_vs_distance.map(function (p) { return 4 + 3 * p.magnitude; }) }
    }], {
      title: { text: "Lead time vs distance (hits)" },
      xaxis: { title: { text: "epicentral distance [km]" } },
      yaxis: { title: { text: "lead time [h]" } },
      margin: { t: 40, r: 20, b: 50, l: 60 }
    }, { displaylogo: false });
  }

  document.addEventListener("DOMContentLoaded", function () {
    setupTimeline();
    setupCatalog();
    setupEvaluation();
  });
})();
