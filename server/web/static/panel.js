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

  // ------------------------------------------------------------ farm-local time
  // plotly has no time zones: x values are the farm's wall-clock time written as naive
  // strings; the UTC time of every point is in its hover text.
  var offsetCache = {};
  function zoneOffsetMs(zone, ms) {
    if (!zone || zone === "UTC") { return 0; }
    var key = zone + Math.floor(ms / HOUR);
    if (offsetCache[key] === undefined) {
      var parts = {};
      new Intl.DateTimeFormat("en-GB", {
        timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", second: "2-digit"
      }).formatToParts(new Date(ms)).forEach(function (p) { parts[p.type] = p.value; });
      var wall = Date.UTC(+parts.year, +parts.month - 1, +parts.day, +parts.hour,
                          +parts.minute, +parts.second);
      offsetCache[key] = wall - Math.floor(ms / 1000) * 1000;
    }
    return offsetCache[key];
  }
  function localText(zone, ms) {
    return new Date(ms + zoneOffsetMs(zone, ms)).toISOString().slice(0, 19).replace("T", " ");
  }
  function utcFromLocal(zone, text) {
    var wall = plotlyDate(text);
    return wall - zoneOffsetMs(zone, wall - zoneOffsetMs(zone, wall));
  }
  function utcClock(ms) { return new Date(ms).toISOString().slice(0, 16).replace("T", " "); }
  function zoneName(zone, ms) {
    if (!zone || zone === "UTC") { return "UTC"; }
    var part = new Intl.DateTimeFormat("en-GB", { timeZone: zone, timeZoneName: "short" })
      .formatToParts(new Date(ms)).filter(function (p) { return p.type === "timeZoneName"; });
    return part.length ? part[0].value : zone;
  }

  // ------------------------------------------------------------ the figure
  var DISTANCE_MAX_KM = 300;   // fixed colour scale: the same colour means the same distance
  var MAGNITUDE_LEGEND = [3, 4, 5, 6];
  function quakeSize(m) { return 4 + 3 * Math.max(m || 0, 0); }

  function axisName(k) { return k ? "y" + (k + 1) : "y"; }
  function axisKey(k) { return k ? "yaxis" + (k + 1) : "yaxis"; }

  // panels: [{series, data|null, error|null}], the first axis is the earthquake strip
  function timelineFigure(panels, zone, opts) {
    var first = panels.filter(function (p) { return p.data; })[0];
    var quakes = first ? first.data.quakes : [];
    var events = first ? first.data.events : [];
    var n = panels.length, stripShare = 0.16, gap = 0.025;
    var each = (1 - stripShare - gap * n) / n;
    var layout = {
      margin: { t: 24, r: 120, b: 150, l: 70 }, hovermode: "x", hoversubplots: "axis",
      showlegend: true,
      legend: { orientation: "h", x: 0, y: 0, yref: "container", yanchor: "bottom",
                itemsizing: "trace" },
      xaxis: { type: "date", anchor: axisName(n), showspikes: true, spikemode: "across",
               spikesnap: "cursor", spikethickness: 1, spikecolor: "#555", spikedash: "solid" },
      shapes: [], annotations: []
    };
    var traces = [];
    // --- earthquake strip (y = magnitude), fixed distance colours, size = magnitude
    layout.yaxis = { domain: [1 - stripShare, 1], title: { text: "M" }, range: [1.5, 7.5],
                     fixedrange: true, zeroline: false };
    traces.push({
      x: quakes.map(function (q) { return localText(zone, q.time_ms); }),
      y: quakes.map(function (q) { return q.magnitude; }),
      customdata: quakes.map(function (q) { return q.event_id; }),
      text: quakes.map(function (q) {
        return (q.is_target ? "<b>target</b> " : "") + "M " + q.magnitude + ", " +
          Math.round(q.distance_km) + " km (" + utcClock(q.time_ms) + " UTC)";
      }),
      hovertemplate: "%{text}<extra>earthquake</extra>", xaxis: "x", yaxis: "y",
      type: "scatter", mode: "markers", name: "earthquakes", showlegend: false,
      marker: {
        size: quakes.map(function (q) { return quakeSize(q.magnitude); }),
        color: quakes.map(function (q) { return Math.min(q.distance_km, DISTANCE_MAX_KM); }),
        cmin: 0, cmax: DISTANCE_MAX_KM, colorscale: "Viridis", reversescale: true,
        showscale: true, line: { width: quakes.map(function (q) { return q.is_target ? 2 : 0.5; }),
                                 color: "#000" },
        colorbar: { title: { text: "distance [km]" }, len: 0.3, y: 1, yanchor: "top",
                    ticksuffix: "", tickvals: [0, 100, 200, 300],
                    ticktext: ["0", "100", "200", "≥ 300"] }
      }
    });
    MAGNITUDE_LEGEND.forEach(function (m) {
      traces.push({ x: [null], y: [null], xaxis: "x", yaxis: "y", type: "scatter",
                    mode: "markers", name: "M " + m, legendgroup: "magnitude",
                    legendgrouptitle: { text: "magnitude" }, hoverinfo: "skip",
                    marker: { size: quakeSize(m), color: "#888" } });
    });
    quakes.filter(function (q) { return q.is_target; }).forEach(function (q) {
      var x = localText(zone, q.time_ms);
      layout.shapes.push({ type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1,
                           line: { color: "#6a1b9a", width: 1.5 }, name: "target-" + q.event_id });
      layout.annotations.push({
        x: x, y: 1, xref: "x", yref: "paper", yanchor: "bottom", showarrow: false,
        text: "target M " + q.magnitude + ", " + Math.round(q.distance_km) + " km",
        font: { size: 11, color: "#6a1b9a" }, captureevents: true,
        name: "target-" + q.event_id, hovertext: "did they react before this quake?"
      });
    });
    events.forEach(function (e) {
      var x0 = localText(zone, Date.parse(e.start));
      var x1 = e.end ? localText(zone, Date.parse(e.end)) : x0;
      layout.shapes.push({ type: "rect", xref: "x", yref: "y domain", x0: x0, x1: x1, y0: 0,
                           y1: 0.18, fillcolor: "rgba(100, 100, 100, 0.45)",
                           line: { width: e.end ? 0 : 2, color: "#555" }, name: "event-" + e.id });
      layout.annotations.push({ x: x0, y: 0.2, xref: "x", yref: "y domain", text: e.kind,
                                showarrow: false, xanchor: "left", font: { size: 10 } });
    });
    // --- one panel per series, the first on top
    panels.forEach(function (panel, i) {
      var k = i + 1, top = 1 - stripShare - gap * (i + 1) - each * i;
      var ya = axisName(k);
      layout[axisKey(k)] = { domain: [Math.max(0, top - each), top], rangemode: "tozero",
                             title: { text: panel.data ? panel.data.unit : "", font: { size: 10 } },
                             zeroline: false };
      layout.annotations.push({ x: 0.005, y: 0.99, xref: "paper", yref: ya + " domain",
                                xanchor: "left", yanchor: "top", showarrow: false,
                                bgcolor: "rgba(255,255,255,0.8)",
                                text: "<b>" + (panel.data ? panel.data.label : panel.series) + "</b>" +
                                      (panel.data && panel.data.rule_grid_s ?
                                       " · rule on a " + panel.data.rule_grid_s / 60 +
                                       "-min grid (baseline, threshold, alarms)" : ""),
                                font: { size: 12 }, name: "panel-" + panel.series });
      if (!panel.data) {
        layout.annotations.push({ x: 0.5, y: 0.5, xref: "paper", yref: ya + " domain",
                                  showarrow: false, text: panel.error, font: { color: "#b42318" },
                                  name: "error-" + panel.series });
        layout[axisKey(k)].visible = false;
        return;
      }
      var d = panel.data, legend = i === 0;
      function line(part, name, style) {
        return { x: part.t.map(function (t) { return localText(zone, t); }), y: part.v,
                 customdata: part.t.map(utcClock), name: name, legendgroup: name,
                 showlegend: legend, xaxis: "x", yaxis: ya, type: "scatter", mode: "lines",
                 connectgaps: false, line: style,
                 hovertemplate: "%{y:.3g} (" + d.label + ", %{customdata} UTC)<extra>" + name +
                   "</extra>" };
      }
      traces.push(line(d.activity, "activity", { color: "#24435c", width: 1 }));
      traces.push(line(d.baseline, "baseline", { color: "#2a9d8f", dash: "dash", width: 1.5 }));
      traces.push(line(d.threshold, "threshold", { color: "#e76f51", dash: "dot", width: 1.5 }));
      var top_y = 0;
      d.activity.v.forEach(function (v) { if (v !== null && v > top_y) { top_y = v; } });
      var own = d.alarms.filter(function (a) { return a.own; });
      d.alarms.forEach(function (a) {
        var x0 = localText(zone, Date.parse(a.start)), x1 = localText(zone, Date.parse(a.end));
        layout.shapes.push(a.own ? {
          type: "rect", xref: "x", yref: ya + " domain", x0: x0, x1: x1, y0: 0, y1: 1,
          fillcolor: "rgba(220, 38, 38, 0.16)", line: { width: 1, color: "rgba(220,38,38,0.6)" },
          layer: "below", name: "alarm-" + a.id
        } : {
          type: "rect", xref: "x", yref: ya + " domain", x0: x0, x1: x1, y0: 0.9, y1: 1,
          fillcolor: "rgba(245, 158, 11, 0.55)", line: { width: 0 }, layer: "below",
          name: "collective-" + a.id
        });
      });
      traces.push({
        x: own.map(function (a) { return localText(zone, Date.parse(a.declared_at)); }),
        y: own.map(function () { return top_y * 1.04 || 1; }),
        customdata: own.map(function (a) { return a.id; }),
        text: own.map(function (a) {
          return "alarm #" + a.id + " " + a.title + (a.declared_known ? ", declared " : ", opened ") +
            localText(zone, Date.parse(a.declared_at)).slice(11, 16) + " " +
            zoneName(zone, Date.parse(a.declared_at)) + " (" +
            utcClock(Date.parse(a.declared_at)).slice(11) + " UTC)";
        }),
        hovertemplate: "%{text}<extra></extra>", xaxis: "x", yaxis: ya, type: "scatter",
        mode: "markers", name: "own alarm (declared)", legendgroup: "own alarm",
        showlegend: legend, marker: { symbol: "triangle-down", size: 11, color: "#b91c1c" }
      });
      if (legend) {
        traces.push({ x: [null], y: [null], xaxis: "x", yaxis: ya, type: "scatter",
                      mode: "markers", name: "collective alarm (herd, quorum, species)",
                      hoverinfo: "skip",
                      marker: { symbol: "square", size: 12, color: "rgba(245,158,11,0.8)" } });
      }
    });
    if (opts.band) {
      var b0 = localText(zone, opts.band[0]), b1 = localText(zone, opts.band[1]);
      layout.shapes.push({ type: "rect", xref: "x", yref: "paper", x0: b0, x1: b1, y0: 0, y1: 1,
                           fillcolor: "rgba(37, 99, 235, 0.08)", line: { width: 0 },
                           layer: "below", name: "lead-window" });
      layout.annotations.push({ x: b0, y: 1, xref: "x", yref: "paper", xanchor: "left",
                                yanchor: "bottom", showarrow: false, text: opts.bandLabel,
                                font: { size: 11, color: "#1d4ed8" }, name: "lead-window" });
    }
    if (opts.range) { layout.xaxis.range = opts.range.map(function (ms) { return localText(zone, ms); }); }
    return { data: traces, layout: layout };
  }

  // ------------------------------------------------------------ loading and URL state
  function fetchSeries(el, series, startMs, endMs) {
    var url = el.dataset.api + "?farm=" + encodeURIComponent(el.dataset.farm) +
      "&series=" + encodeURIComponent(series) +
      "&start=" + encodeURIComponent(iso(startMs)) + "&end=" + encodeURIComponent(iso(endMs)) +
      "&max_points=" + Math.max(200, Math.min(4000, 2 * el.clientWidth));
    return fetch(url, { credentials: "same-origin" }).then(function (r) {
      return r.json().then(function (body) {
        return r.ok ? { series: series, data: body } :
          { series: series, data: null, error: body.error || ("HTTP " + r.status) };
      });
    }).catch(function (err) { return { series: series, data: null, error: err.message }; });
  }

  function loadTimeline(el, startMs, endMs, history) {
    var seriesList = JSON.parse(el.dataset.seriesList || "[]");
    var zone = el.dataset.timezone || "UTC";
    el.dataset.rendered = "0";
    status("loading…");
    el.dataset.start = iso(startMs);
    el.dataset.end = iso(endMs);
    return Promise.all(seriesList.map(function (s) { return fetchSeries(el, s, startMs, endMs); }))
      .then(function (panels) {
        var band = el.dataset.bandStart ?
          [Date.parse(el.dataset.bandStart), Date.parse(el.dataset.bandEnd)] : null;
        var fig = timelineFigure(panels, zone, { range: [startMs, endMs], band: band,
                                                 bandLabel: el.dataset.bandLabel });
        var each = el.dataset.compact ? 110 : 190;
        el.style.height = (150 + each * panels.length) + "px";
        return Plotly.react(el, fig.data, fig.layout,
                            { responsive: true, displaylogo: false, doubleClick: false })
          .then(function () {
            var ok = panels.filter(function (p) { return p.data; });
            var firstOk = ok[0] && ok[0].data;
            el.dataset.alarmSpans = String(ok.reduce(function (n, p) { return n + p.data.alarms.length; }, 0));
            el.dataset.points = String(firstOk ? firstOk.activity.t.length : 0);
            el.dataset.rendered = "1";
            var words = ok.map(function (p) {
              return p.data.label + ": " + p.data.activity.t.length + " points" +
                (p.data.downsampled ? " (min/max per " + p.data.bucket_s + " s bucket)" : "");
            });
            panels.forEach(function (p) { if (!p.data) { words.push(p.series + ": " + p.error); } });
            if (firstOk) {
              words.push(firstOk.alarms.length + " alarm(s), " + firstOk.quakes.length +
                         " earthquake(s)");
            }
            status(words.join("; "));
            syncRange(el, startMs, endMs, history);
          });
      }).catch(function (err) { status("error: " + err.message); });
  }

  // the range in the form and, on the timeline page, in the URL (back button works)
  function syncRange(el, startMs, endMs, history) {
    var form = document.getElementById("timeline-form");
    if (form) {
      form.elements.start.value = iso(startMs);
      form.elements.end.value = iso(endMs);
    }
    if (!el.dataset.urlState || history === "none") { return; }
    var url = new URL(window.location.href);
    url.searchParams.set("start", iso(startMs));
    url.searchParams.set("end", iso(endMs));
    var state = { start: startMs, end: endMs };
    if (history === "push") { window.history.pushState(state, "", url.toString()); }
    else { window.history.replaceState(state, "", url.toString()); }
  }

  function quakeHref(el, eventId) {
    return el.dataset.quakeUrl + "?farm=" + encodeURIComponent(el.dataset.farm) +
      "&event=" + encodeURIComponent(eventId);
  }

  function setupTimeline() {
    var el = document.getElementById("timeline-plot");
    if (!el) { return; }
    if (!el.dataset.seriesList) { el.dataset.seriesList = JSON.stringify([el.dataset.series]); }
    var zone = el.dataset.timezone || "UTC";
    var start, end;
    if (el.dataset.aroundStart) {
      start = Date.parse(el.dataset.aroundStart) - 24 * HOUR;
      end = Date.parse(el.dataset.aroundEnd) + 24 * HOUR;
    } else {
      start = Date.parse(el.dataset.start);
      end = Date.parse(el.dataset.end);
    }
    loadTimeline(el, start, end, "replace");
    var current = function () { return [Date.parse(el.dataset.start), Date.parse(el.dataset.end)]; };
    var zoomOut = function () {
      var r = current(), mid = (r[0] + r[1]) / 2, half = (r[1] - r[0]) * 1.5;
      loadTimeline(el, Math.round(mid - half), Math.round(mid + half), "push");
    };
    var button = document.getElementById("zoom-out");
    if (button) { button.addEventListener("click", zoomOut); }
    window.addEventListener("popstate", function (ev) {
      if (ev.state && ev.state.start) { loadTimeline(el, ev.state.start, ev.state.end, "none"); }
    });
    var timer = null;
    var attach = function () {
      if (!el.on) { return setTimeout(attach, 100); }
      el.on("plotly_relayout", function (ev) {
        if (ev["xaxis.autorange"]) { zoomOut(); return; }
        var a = ev["xaxis.range[0]"], b = ev["xaxis.range[1]"];
        if (ev["xaxis.range"]) { a = ev["xaxis.range"][0]; b = ev["xaxis.range"][1]; }
        if (!a || !b) { return; }
        clearTimeout(timer);
        timer = setTimeout(function () {
          loadTimeline(el, utcFromLocal(zone, a), utcFromLocal(zone, b), "push");
        }, 250);
      });
      el.on("plotly_doubleclick", zoomOut);
      el.on("plotly_clickannotation", function (ev) {
        var name = ev.annotation && ev.annotation.name;
        if (name && name.indexOf("target-") === 0 && el.dataset.quakeUrl) {
          window.location.href = quakeHref(el, name.slice(7));
        }
      });
      el.on("plotly_click", function (ev) {
        var pt = ev.points && ev.points[0];
        if (!pt) { return; }
        if (pt.data.name === "own alarm (declared)" && el.dataset.alarmUrl) {
          window.location.href = el.dataset.alarmUrl + "/" + pt.customdata;
        } else if (pt.data.name === "earthquakes" && el.dataset.quakeUrl && pt.customdata) {
          window.location.href = quakeHref(el, pt.customdata);
        }
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
        customdata: ev.map(function (q) { return q.event_id; }),
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
    }, { displaylogo: false }).then(function () {
      el.dataset.rendered = "1";
      el.on("plotly_click", function (e) {
        var pt = e.points && e.points[0];
        if (pt && pt.customdata && el.dataset.quakeUrl) {
          window.location.href = quakeHref(el, pt.customdata);
        }
      });
    });
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
        mode: "lines", name: "binomial limit (α)", line: { color: "#e76f51" } },
      { x: d.molchan.map(function (p) { return p.tau; }), y: d.molchan.map(function (p) { return p.nu; }),
        text: d.molchan.map(function (p) { return "+" + p.threshold + " %"; }),
        mode: "lines+markers", name: "rule thresholds", line: { color: "#24435c" } },
      { x: [r.alarm_fraction], y: [r.miss_rate], mode: "markers", name: "chosen rule",
        marker: { size: 12, color: "#d00" } }
    ];
    var ref = d.reference_molchan || [];
    if (ref.length) {
      traces.push({ x: ref.map(function (p) { return p.tau; }), y: ref.map(function (p) { return p.nu; }),
        text: ref.map(function (p) { return "reference, " + p.threshold + " h"; }),
        mode: "lines+markers", name: "seismicity reference (window)",
        line: { color: "#2a9d8f", dash: "dot" } });
    }
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
