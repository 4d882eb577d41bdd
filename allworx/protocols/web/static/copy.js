// Copy buttons next to values an admin pastes elsewhere (the Mail security
// page's DNS records). Without the script the buttons stay hidden and the
// values are plain selectable text.
(function () {
  function select(el) {
    var range = document.createRange();
    range.selectNodeContents(el);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }
  function copied(button, ok) {
    var label = button.textContent;
    button.textContent = ok ? "Copied" : "Selected: press Ctrl+C";
    setTimeout(function () { button.textContent = label; }, 2000);
  }
  document.querySelectorAll("button.copy[data-copy]").forEach(function (button) {
    var target = document.getElementById(button.getAttribute("data-copy"));
    if (!target) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      var text = target.textContent;
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(function () { copied(button, true); },
          function () { select(target); copied(button, false); });
        return;
      }
      select(target);
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      copied(button, ok);
    });
  });
})();
