// The Logs page's live tail: on the newest page, ask /api/v1/logs every
// 2 seconds for events newer than the newest shown (with the page's filters)
// and put them on top. Without the script the page is a plain paged table.
(function () {
  var table = document.getElementById("log-events");
  if (!table || table.getAttribute("data-tail") !== "yes" || !window.fetch) return;
  var body = table.querySelector("tbody");
  var live = document.getElementById("log-live");
  var label = document.getElementById("log-live-label");
  var status = document.getElementById("log-status");
  var MAX_ROWS = 500;
  if (label) label.hidden = false;

  function newestId() { return parseInt(table.getAttribute("data-newest-id") || "0", 10) || 0; }

  function cell(text) {
    var td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  function shownTime(rfc3339) {
    // 2026-12-07T10:00:00.250Z -> 2026-12-07 10:00:00, as the page shows it.
    return (rfc3339 || "").replace("T", " ").replace(/\.\d+Z$|Z$/, "");
  }

  function row(e) {
    var tr = document.createElement("tr");
    tr.setAttribute("data-id", e.id);
    tr.className = "level-" + e.level + " new";
    tr.appendChild(cell(shownTime(e.time)));
    var service = cell(e.service);
    service.className = "service";
    tr.appendChild(service);
    var level = document.createElement("td");
    var span = document.createElement("span");
    span.className = "state level-" + e.level;
    span.textContent = e.level;
    level.appendChild(span);
    tr.appendChild(level);
    var message = cell(e.message);
    var names = Object.keys(e.fields || {}).sort();
    if (names.length) {
      var small = document.createElement("small");
      small.className = "help";
      small.textContent = names.map(function (k) { return k + "=" + e.fields[k]; }).join(" ");
      message.appendChild(document.createElement("br"));
      message.appendChild(small);
    }
    tr.appendChild(message);
    return tr;
  }

  function query() {
    var params = new URLSearchParams();
    ["service", "level", "q"].forEach(function (name) {
      var value = table.getAttribute("data-" + name);
      if (value) params.set(name, value);
    });
    var since = table.getAttribute("data-newest-time");
    if (since) params.set("since", since);
    params.set("limit", "200");
    return "/api/v1/logs?" + params.toString();
  }

  function add(events) {
    var last = newestId();
    var fresh = events.filter(function (e) { return e.id > last; });
    if (!fresh.length) return;
    var empty = body.querySelector("tr.empty");
    if (empty) empty.remove();
    for (var i = fresh.length - 1; i >= 0; i--) body.insertBefore(row(fresh[i]), body.firstChild);
    while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
    table.setAttribute("data-newest-id", String(fresh[0].id));
    var when = Date.parse(fresh[0].time);
    if (!isNaN(when)) table.setAttribute("data-newest-time", (when / 1000).toFixed(3));
  }

  function poll() {
    if (document.hidden || (live && !live.checked)) return;
    fetch(query(), {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (answer) {
        add(answer.events || []);
        if (status) status.textContent = "Following new events.";
      })
      .catch(function (e) { if (status) status.textContent = "Could not fetch new events (" + e.message + ")."; });
  }
  setInterval(poll, 2000);
})();
