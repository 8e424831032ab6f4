// The studio's own script: tabs, frames sized to their email, and live reload over server-sent events
// (of the course's files everywhere, of the outbox on its list).
(function () {
  "use strict";

  function setUpTabs() {
    var list = document.querySelector("[role=tablist]");
    if (!list) return;
    var tabs = Array.prototype.slice.call(list.querySelectorAll("[role=tab]"));
    function select(tab) {
      tabs.forEach(function (other) {
        var selected = other === tab;
        other.setAttribute("aria-selected", selected ? "true" : "false");
        other.tabIndex = selected ? 0 : -1;
        document.getElementById(other.getAttribute("aria-controls")).hidden = !selected;
      });
    }
    tabs.forEach(function (tab, index) {
      tab.addEventListener("click", function () {
        select(tab);
        history.replaceState(null, "", "#" + tab.getAttribute("aria-controls"));
      });
      tab.addEventListener("keydown", function (event) {
        var step = event.key === "ArrowRight" ? 1 : event.key === "ArrowLeft" ? -1 : 0;
        if (!step) return;
        var next = tabs[(index + step + tabs.length) % tabs.length];
        next.focus();
        next.click();
      });
    });
    var wanted = tabs.filter(function (tab) {
      return "#" + tab.getAttribute("aria-controls") === location.hash;
    })[0];
    list.hidden = false;
    document.body.classList.add("tabbed");
    select(wanted || tabs[0]);
  }

  function fitFrame(frame) {
    try {
      var page = frame.contentDocument && frame.contentDocument.documentElement;
      if (page) frame.style.height = Math.max(page.scrollHeight, 320) + "px";
    } catch (error) {
      // A frame we may not read keeps its stylesheet height.
    }
  }

  function setUpFrames() {
    Array.prototype.forEach.call(document.querySelectorAll("iframe.frame"), function (frame) {
      frame.addEventListener("load", function () { fitFrame(frame); });
      fitFrame(frame);
    });
  }

  function setUpLiveReload() {
    if (!window.EventSource) return;
    var drawnWith = document.body.getAttribute("data-live-version");
    var status = document.getElementById("live-status");
    var source = new EventSource("/_studio/events");
    source.addEventListener("version", function (event) {
      if (status) status.classList.add("on");
      if (event.data !== drawnWith) location.reload();
    });
    // Only the outbox list follows the outbox: a message landing must not reload the lesson being edited.
    var outbox = document.querySelector("[data-outbox-version]");
    source.addEventListener("outbox", function (event) {
      if (outbox && event.data !== outbox.getAttribute("data-outbox-version")) location.reload();
    });
    source.addEventListener("error", function () {
      if (status) status.classList.remove("on");
    });
  }

  setUpTabs();
  setUpFrames();
  setUpLiveReload();
})();
