// The Backup/Restore page: the archive goes to POST /api/v1/backup as the
// request body (not a form), with the page's CSRF token.
(function () {
  var form = document.getElementById("restore-archive");
  if (!form) { return; }
  var result = document.getElementById("restore-result");
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var file = document.getElementById("archive").files[0];
    if (!file) { result.textContent = "Choose a backup archive first."; return; }
    result.textContent = "Uploading and checking " + file.name + "…";
    fetch("/api/v1/backup", {
      method: "POST", body: file, credentials: "same-origin",
      headers: {"Content-Type": "application/gzip", "X-CSRF-Token": form.dataset.csrf}
    }).then(function (response) {
      return response.json().then(function (body) { return [response.status, body]; });
    }).then(function (answer) {
      var body = answer[1];
      if (answer[0] === 200) {
        result.textContent = "Restored " + body.files + " files; the state before is kept as " +
          body.pre_restore_backup + ". The services are restarting: log in again in a moment.";
        result.className = "restored";
      } else {
        var why = body.reason || "";
        if (body.errors) {
          why = body.errors.map(function (e) {
            return (e.section ? "[" + e.section + "] " : "") + (e.key ? e.key + ": " : "") + e.reason;
          }).join("; ");
        }
        result.textContent = "Nothing was restored: " + why;
        result.className = "errors";
      }
    }).catch(function (error) {
      result.textContent = "Nothing was restored: " + error;
      result.className = "errors";
    });
  });
})();
