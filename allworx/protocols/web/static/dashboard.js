// The Status page's graphs: each <figure class="chart" data-series="a b"> becomes a
// Chart.js line chart of those series from /api/v1/stats, over the last hour, day or
// week, fetched again every 10 seconds without reloading the page. Times on the x
// axis are epoch milliseconds (no date adapter needed). Without Chart.js or fetch the
// page says so and shows the rest.
(function () {
  "use strict";
  var box = document.getElementById("charts");
  if (!box) return;
  var note = box.querySelector(".chart-note");
  function say(text) { note.textContent = text; note.hidden = false; }
  if (!window.fetch || !window.Chart) {
    say("The graphs could not be drawn: this browser did not load Chart.js.");
    return;
  }
  var SPAN = {hour: 3600e3, day: 86400e3, week: 7 * 86400e3};
  // Ticks on round times: every 10 minutes, 4 hours, a day.
  var TICK = {hour: 600e3, day: 4 * 3600e3, week: 86400e3};
  var WORDS = {hour: "the last hour", day: "the last day", week: "the last week"};
  var COLOURS = ["#1f5fa8", "#c2410c", "#1e7b34", "#7c3aed"];
  var EVERY = 10000;
  var range = "hour";
  var charts = [];    // {figure, chart, series: [{name, unit, path}]}
  var refreshes = 0;

  function getJSON(url) {
    return fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) {
        if (!r.ok) throw new Error(url + ": HTTP " + r.status);
        return r.json();
      });
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function tick(value) {
    var d = new Date(value);
    var hm = pad(d.getHours()) + ":" + pad(d.getMinutes());
    if (range !== "week") return hm;
    return d.toLocaleDateString(undefined, {weekday: "short"}) + " " + hm;
  }

  function number(v) {
    var a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(1) + " G";
    if (a >= 1e6) return (v / 1e6).toFixed(1) + " M";
    if (a >= 1e4) return (v / 1e3).toFixed(1) + " k";
    if (a >= 100 || v === Math.round(v)) return String(Math.round(v));
    return v.toFixed(2);
  }

  // What a series adds up to over the range, in words ("1.2 MB in the last hour").
  function total(series, answer) {
    var step = answer.step_s || 0, sum = 0, peak = null, last = null;
    answer.points.forEach(function (p) {
      if (p[1] === null || p[1] === undefined) return;
      sum += p[1] * step;
      peak = peak === null ? p[1] : Math.max(peak, p[1]);
      last = p[1];
    });
    if (last === null) return null;
    var unit = (answer.unit || series.unit || "").toLowerCase();
    var label = series.name.split(".").slice(1).join(".");
    if (unit.indexOf("bit") >= 0 && unit.slice(-2) === "/s")
      return label + " " + number(sum / 8) + "B";
    if (unit.slice(-2) === "/s") return label + " " + number(sum);
    if (unit.indexOf("min") >= 0) return label + " " + number(sum / 60);
    if (unit.indexOf("ratio") >= 0 || unit === "0..1" || unit === "%")
      return label + " now " + number(last);
    return label + " now " + number(last) + ", peak " + number(peak);
  }

  function make(figure, known) {
    var names = figure.getAttribute("data-series").split(/\s+/);
    var series = names.map(function (n) { return known[n]; }).filter(Boolean);
    if (!series.length) {
      figure.querySelector(".total").textContent = "(not kept on this server)";
      return;
    }
    var units = [];
    var datasets = series.map(function (s, i) {
      if (units.indexOf(s.unit) < 0) units.push(s.unit);
      return {label: s.name + " (" + s.unit + ")", data: [], borderColor: COLOURS[i % 4],
              backgroundColor: COLOURS[i % 4], borderWidth: 1.5, pointRadius: 0,
              tension: 0.2, spanGaps: false, yAxisID: units.indexOf(s.unit) ? "y1" : "y"};
    });
    var scales = {
      x: {type: "linear", ticks: {callback: tick, maxTicksLimit: 9}},
      y: {beginAtZero: true, ticks: {callback: number},
          title: {display: true, text: units[0]}}
    };
    if (units.length > 1) {
      scales.y1 = {position: "right", beginAtZero: true, grid: {drawOnChartArea: false},
                   ticks: {callback: number}, title: {display: true, text: units[1]}};
    }
    var chart = new Chart(figure.querySelector("canvas"), {
      type: "line",
      data: {datasets: datasets},
      options: {animation: false, responsive: true, maintainAspectRatio: false,
                parsing: false, normalized: true, scales: scales,
                interaction: {mode: "nearest", axis: "x", intersect: false},
                plugins: {legend: {labels: {boxWidth: 12}},
                          tooltip: {callbacks: {title: function (items) {
                            return items.length ? new Date(items[0].parsed.x).toLocaleString() : "";
                          }}}}}
    });
    charts.push({figure: figure, chart: chart, series: series});
  }

  function load(entry) {
    return Promise.all(entry.series.map(function (s) {
      var path = s.path || ("/api/v1/stats/" + encodeURIComponent(s.name));
      return getJSON(path + (path.indexOf("?") < 0 ? "?" : "&") + "range=" + range);
    })).then(function (answers) {
      var now = Date.now(), count = 0, words = [];
      answers.forEach(function (answer, i) {
        var data = [], gap = 1500 * (answer.step_s || 10);
        answer.points.forEach(function (p) {
          var x = Date.parse(p[0]);
          // A step without a value (the server was down): break the line there.
          if (data.length && x - data[data.length - 1].x > gap)
            data.push({x: data[data.length - 1].x + gap, y: null});
          data.push({x: x, y: p[1] === null || p[1] === undefined ? null : p[1]});
        });
        count += data.length;
        entry.chart.data.datasets[i].data = data;
        var w = total(entry.series[i], answer);
        if (w) words.push(w);
      });
      entry.chart.options.scales.x.min = now - SPAN[range];
      entry.chart.options.scales.x.max = now;
      entry.chart.options.scales.x.ticks.stepSize = TICK[range];
      entry.chart.update("none");
      entry.figure.setAttribute("data-points", String(count));
      entry.figure.querySelector(".total").textContent =
        words.length ? "(" + WORDS[range] + ": " + words.join("; ") + ")" : "(no data yet)";
    });
  }

  function refresh() {
    return Promise.all(charts.map(load)).then(function () {
      refreshes += 1;
      box.setAttribute("data-refreshes", String(refreshes));
      note.hidden = true;
    }, function (e) {
      say("The graphs could not be brought up to date: " + e.message);
    });
  }

  box.querySelectorAll("button.range").forEach(function (button) {
    button.addEventListener("click", function () {
      range = button.getAttribute("data-range");
      box.querySelectorAll("button.range").forEach(function (b) {
        b.setAttribute("aria-pressed", b === button ? "true" : "false");
      });
      refresh();
    });
  });

  getJSON("/api/v1/stats").then(function (answer) {
    var known = {};
    (answer.series || []).forEach(function (s) { known[s.name] = s; });
    box.querySelectorAll("figure.chart").forEach(function (f) { make(f, known); });
    box.querySelector(".ranges").hidden = false;
    return refresh();
  }).then(function () {
    setInterval(function () { if (!document.hidden) refresh(); }, EVERY);
  }, function (e) {
    say("The statistics could not be read: " + e.message);
  });
})();
