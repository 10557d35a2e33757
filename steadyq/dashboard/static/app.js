// The live feed: server-sent events from /live, added to the page as text only.
"use strict";
(function () {
  var status = document.getElementById("status");
  function say(ok, text) {
    if (!status) return;
    status.textContent = text;
    status.setAttribute("data-state", ok ? "live" : "down");
  }
  var live = document.querySelector("#live tbody");
  if (!live) { say(true, "ready"); return; }
  var columns = ["time", "kind", "execution_id", "message_id", "request_id", "reason", "text"];
  var source = new EventSource("/live");
  source.addEventListener("event", function (e) {
    var item = JSON.parse(e.data);
    var row = document.createElement("tr");
    row.className = item.kind.replace(".", "-");
    row.setAttribute("data-kind", item.kind);
    columns.forEach(function (name) {
      var cell = document.createElement("td");
      cell.textContent = item[name];
      row.appendChild(cell);
    });
    live.insertBefore(row, live.firstChild);
    while (live.rows.length > 200) live.deleteRow(live.rows.length - 1);
    var counter = document.querySelector('[data-count="' + item.kind + '"]');
    if (counter) counter.textContent = String(parseInt(counter.textContent, 10) + 1);
  });
  source.addEventListener("backlog", function (e) {
    var stats = JSON.parse(e.data);
    Object.keys(stats).forEach(function (name) {
      var cell = document.querySelector('[data-stat="' + name + '"]');
      if (!cell) return;
      var value = stats[name];
      if (value === null) cell.textContent = name === "oldest_unacked_age_s" ? "—" : "unknown";
      else if (name === "oldest_unacked_age_s") cell.textContent = value.toFixed(1) + "s";
      else cell.textContent = String(value);
    });
  });
  source.addEventListener("status", function (e) {
    var s = JSON.parse(e.data);
    say(s.ok, s.ok ? "live" : "backend unreachable: " + s.text);
  });
  source.onerror = function () { say(false, "dashboard unreachable, retrying…"); };
})();
