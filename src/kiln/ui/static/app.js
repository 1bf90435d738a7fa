// Kiln dashboard: metric charts (uPlot) and folding nested runs. Loaded from /static only.
(function () {
  "use strict";
  var COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

  function fetchSeries(run, key, range) {
    var url = "/api/runs/" + encodeURIComponent(run) + "/metrics/" + encodeURIComponent(key) + "?points=1000";
    if (range) { url += "&from=" + range[0] + "&to=" + range[1]; }
    return fetch(url, { headers: { Accept: "application/json" } }).then(function (r) {
      if (!r.ok) { return r.json().then(function (b) { throw new Error(b.error || r.statusText); }); }
      return r.json();
    });
  }

  function smooth(values, weight) {
    if (!weight) { return values; }
    var out = new Array(values.length), last = null;
    for (var i = 0; i < values.length; i++) {
      var v = values[i];
      if (v === null) { out[i] = null; continue; }
      last = last === null ? v : last * weight + (1 - weight) * v;
      out[i] = last;
    }
    return out;
  }

  // Several runs' series on one x axis: the union of their steps, nulls where a run has none.
  function align(series) {
    var steps = {}, i, j;
    series.forEach(function (s) { s.steps.forEach(function (x) { steps[x] = true; }); });
    var xs = Object.keys(steps).map(Number).sort(function (a, b) { return a - b; });
    var index = {};
    xs.forEach(function (x, k) { index[x] = k; });
    var ys = series.map(function (s) {
      var col = new Array(xs.length).fill(null);
      for (j = 0; j < s.steps.length; j++) { col[index[s.steps[j]]] = s.values[j]; }
      return col;
    });
    return [xs].concat(ys);
  }

  // When every chart of the page has drawn its first data: the time is kept for the
  // benchmark and the browser tests (performance.now(), ms since navigation started).
  var pendingCharts = 0;
  function chartDone() {
    pendingCharts -= 1;
    if (pendingCharts === 0) {
      window.kilnChartsReadyAt = performance.now();
      document.documentElement.setAttribute("data-charts-ready", "1");
    }
  }

  function chart(figure) {
    var runs = figure.dataset.runs.split(",");
    var labels = JSON.parse(figure.dataset.labels || "[]");
    var key = figure.dataset.key;
    var holder = figure.querySelector(".plot");
    var note = figure.querySelector(".note");
    var logBox = figure.querySelector(".log");
    var slider = figure.querySelector(".smooth");
    var raw = null, plot = null, full = null;

    function draw(data, exact) {
      raw = data;
      var weight = parseFloat(slider.value) || 0;
      var shown = [data[0]].concat(data.slice(1).map(function (c) { return smooth(c, weight); }));
      if (plot) { plot.destroy(); }
      var width = Math.max(300, holder.clientWidth || 440);
      plot = new uPlot({
        width: width, height: 240,
        scales: { x: { time: false }, y: { distr: logBox.checked ? 3 : 1 } },
        axes: [{ label: "step" }, {}],
        series: [{ label: "step" }].concat(runs.map(function (r, i) {
          return { label: labels[i] || r, stroke: COLORS[i % COLORS.length], spanGaps: true, width: 1.5 };
        })),
        cursor: { drag: { x: true, y: false } },
        hooks: { setSelect: [function (u) {
          if (u.select.width < 2) { return; }
          var lo = u.posToVal(u.select.left, "x"), hi = u.posToVal(u.select.left + u.select.width, "x");
          u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
          load([lo, hi]);
        }] }
      }, shown, holder);
      note.textContent = exact ? "" : "Downsampled for display; drag across the chart to zoom into exact values.";
    }

    function load(range) {
      Promise.all(runs.map(function (r) { return fetchSeries(r, key, range); })).then(function (series) {
        var exact = series.every(function (s) { return s.exact; });
        var data = align(series);
        if (!range) { full = { data: data, exact: exact }; }
        draw(data, exact);
        if (!range) { chartDone(); }
      }).catch(function (e) { note.textContent = "Could not load " + key + ": " + e.message; chartDone(); });
    }

    logBox.addEventListener("change", function () { if (raw) { draw(raw, true); } });
    slider.addEventListener("input", function () { if (raw) { draw(raw, true); } });
    figure.querySelector(".reset").addEventListener("click", function () { if (full) { draw(full.data, full.exact); } });
    load(null);
  }

  // A chart whose data is in the page: <figure class="series-chart"> holding
  // <script type="application/json" class="series">{"x": [...], "time": true,
  // "xlabel": "", "ylabel": "", "series": [{"label": "", "values": [...]}]}</script>.
  function seriesChart(figure) {
    var spec = JSON.parse(figure.querySelector("script.series").textContent);
    var holder = figure.querySelector(".plot");
    var width = Math.max(300, holder.clientWidth || 440);
    new uPlot({
      width: width, height: 220,
      scales: { x: { time: !!spec.time } },
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },  // times in UTC, as the pages say
      axes: [{ label: spec.xlabel || "" }, { label: spec.ylabel || "" }],
      series: [{ label: spec.xlabel || "x" }].concat(spec.series.map(function (s, i) {
        // A series may set its own "points" (dots) and "line": false (dots only).
        var opts = { label: s.label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true,
          points: { show: s.points === undefined ? !!spec.points : !!s.points } };
        if (s.line === false) {
          opts.paths = function () { return null; };
          opts.points.size = 6;
          opts.points.fill = COLORS[i % COLORS.length];
        }
        return opts;
      }))
    }, [spec.x].concat(spec.series.map(function (s) { return s.values; })), holder);
  }

  function folding() {
    document.querySelectorAll("button.fold").forEach(function (button) {
      button.addEventListener("click", function () {
        var open = button.getAttribute("aria-expanded") !== "true";
        button.setAttribute("aria-expanded", open ? "true" : "false");
        button.textContent = (open ? "▾ " : "▸ ") + button.textContent.slice(2);
        document.querySelectorAll('tr.child[data-parent="' + button.dataset.run + '"]').forEach(function (row) {
          row.hidden = !open;
        });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var figures = document.querySelectorAll("figure.chart");
    pendingCharts = figures.length;
    figures.forEach(chart);
    document.querySelectorAll("figure.series-chart").forEach(seriesChart);
    folding();
  });
})();
