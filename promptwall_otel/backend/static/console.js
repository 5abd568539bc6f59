// promptwall-otel console: the only script the pages load (the Content-Security-Policy allows no other).
// Every few seconds it fetches the page again and swaps in its live region, so new events appear
// without a reload. It pauses while the tab is hidden or while focus is inside the region (keyboard
// users keep their place), and never has two fetches in flight (a slow page must not pile up
// requests on the server). The fetched HTML is parsed inertly and never executes anything.
(function () {
  "use strict";
  var live = document.querySelector("[data-live]");
  if (!live) return;
  var period = parseInt(live.getAttribute("data-refresh-ms"), 10) || 3000;
  var inFlight = false;
  function refresh() {
    if (inFlight || document.hidden || live.contains(document.activeElement)) return;
    inFlight = true;
    fetch(window.location.href, { credentials: "same-origin", redirect: "manual" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (text) {
        if (text === null) return;
        var fresh = new DOMParser().parseFromString(text, "text/html").querySelector("[data-live]");
        if (fresh && fresh.innerHTML !== live.innerHTML) live.innerHTML = fresh.innerHTML;
      })
      .catch(function () { /* the server is restarting or gone: try again next period */ })
      .then(function () { inFlight = false; });
  }
  window.setInterval(refresh, period);
})();
