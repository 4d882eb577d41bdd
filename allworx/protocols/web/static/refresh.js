// Progressive touch: refresh a page's live table (leases, connection log, phones)
// every 10 seconds without reloading the page. The page works without it.
(function () {
  var main = document.querySelector("main[data-refresh]");
  if (!main || !window.fetch || !window.DOMParser) return;
  var id = main.getAttribute("data-refresh");
  setInterval(function () {
    if (document.hidden) return;
    fetch(location.pathname + location.search, {credentials: "same-origin"}).then(function (r) {
      return r.ok ? r.text() : null;
    }).then(function (text) {
      if (!text) return;
      var fresh = new DOMParser().parseFromString(text, "text/html").getElementById(id);
      var old = document.getElementById(id);
      if (fresh && old) old.replaceWith(fresh);
    }).catch(function () {});
  }, 10000);
})();
