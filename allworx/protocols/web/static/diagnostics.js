// The Diagnostics page: posts the form to /api/v1/diagnostics/KIND with the
// page's session and CSRF token, and appends the answer's lines to the <pre>
// as they arrive (a ReadableStream reader). Stop aborts the request, which
// ends the run on the server.
(function () {
  "use strict";
  var form = document.getElementById("diag-form");
  if (!form || !window.fetch || !window.TextDecoder) return;
  var out = document.getElementById("diag-output");
  var state = document.getElementById("diag-state");
  var errors = document.getElementById("diag-errors");
  var stop = document.getElementById("diag-stop");
  var run = document.getElementById("diag-run");
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.getAttribute("content") : "";
  var controller = null;

  function showFields() {
    var kind = form.elements.kind.value;
    document.getElementById("diag-port-field").hidden = kind !== "tcp";
    document.getElementById("diag-dns-field").hidden = kind !== "dns";
  }

  function showErrors(list) {
    errors.textContent = "";
    var strong = document.createElement("strong");
    strong.textContent = "Not run.";
    errors.appendChild(strong);
    var ul = document.createElement("ul");
    list.forEach(function (e) {
      var li = document.createElement("li");
      li.textContent = (e.key ? e.key + ": " : "") + (e.message || e.reason || "");
      ul.appendChild(li);
    });
    errors.appendChild(ul);
    errors.hidden = false;
  }

  function ended(text) {
    state.textContent = text;
    stop.disabled = true;
    run.disabled = false;
    form.setAttribute("data-state", "done");
    controller = null;
  }

  function body() {
    var kind = form.elements.kind.value;
    var data = {target: form.elements.target.value.trim()};
    if (kind === "tcp") {
      var port = form.elements.port.value.trim();
      data.port = /^\d+$/.test(port) ? Number(port) : port;
    }
    if (kind === "dns") {
      var server = form.elements.server.value.trim();
      if (server) data.server = server;
      if (form.elements.type.value) data.type = form.elements.type.value;
    }
    return data;
  }

  function read(response) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder("utf-8");
    function next() {
      return reader.read().then(function (chunk) {
        if (chunk.done) {
          out.textContent += decoder.decode();
          ended("Done.");
          return;
        }
        out.textContent += decoder.decode(chunk.value, {stream: true});
        return next();
      });
    }
    return next();
  }

  form.elements.kind.addEventListener("change", showFields);
  showFields();

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (controller) controller.abort();
    controller = new AbortController();
    var kind = form.elements.kind.value;
    errors.hidden = true;
    out.textContent = "";
    state.textContent = "Running…";
    form.setAttribute("data-state", "running");
    stop.disabled = false;
    run.disabled = true;
    fetch("/api/v1/diagnostics/" + encodeURIComponent(kind), {
      method: "POST", credentials: "same-origin", signal: controller.signal,
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
      body: JSON.stringify(body())
    }).then(function (response) {
      if (response.ok) return read(response);
      return response.json().then(function (answer) {
        showErrors(answer.errors || [{message: answer.reason || answer.error}]);
        ended("Refused (" + response.status + ").");
      }, function () {
        ended("Failed (" + response.status + ").");
      });
    }).catch(function (e) {
      ended(e && e.name === "AbortError" ? "Stopped." : "Failed: " + e);
    });
  });

  stop.addEventListener("click", function () {
    if (controller) controller.abort();
  });
})();
