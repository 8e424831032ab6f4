// Preselect the reader's own time zone, as their browser reports it; the select stays visible to correct it.
(function () {
  "use strict";
  var select = document.querySelector("select[data-detect-zone]");
  if (!select || !window.Intl || !Intl.DateTimeFormat) return;
  var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  var known = Array.prototype.some.call(select.options, function (option) { return option.value === zone; });
  if (!zone || !known) return;
  select.value = zone;
  var hint = document.getElementById("zone-hint");
  if (hint) hint.textContent = "Your browser says you are in " + zone + "; lessons arrive at this time there. Change it if that is wrong.";
})();
