// Preselect the reader's own time zone, as their browser reports it; the select stays visible to correct it.
// The form offers each zone under its current name; the browser may report an older one (Asia/Calcutta).
(function () {
  "use strict";
  var select = document.querySelector("select[data-detect-zone]");
  if (!select || !window.Intl || !Intl.DateTimeFormat) return;
  var aliases = {};
  try {
    aliases = JSON.parse(select.getAttribute("data-zone-aliases") || "{}");
  } catch (error) {
    // Without the map, only zones reported under their current name are preselected.
  }
  var reported = Intl.DateTimeFormat().resolvedOptions().timeZone;
  var zone = aliases[reported] || reported;
  var known = Array.prototype.some.call(select.options, function (option) { return option.value === zone; });
  if (!zone || !known) return;
  select.value = zone;
  var hint = document.getElementById("zone-hint");
  if (hint) hint.textContent = "Your browser says you are in " + zone + "; lessons arrive at this time there. Change it if that is wrong.";
})();
