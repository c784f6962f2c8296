// The live view (webui/live.py): redraw the board from GET /live/state every
// data-poll-ms, and start a listen-in (POST /live/listen/<manager id>) from a
// row's buttons. No inline script; text goes in with textContent only.
(function () {
  "use strict";
  var root = document.getElementById("live");
  if (!root) { return; }
  var cfg = root.dataset;
  var message = document.getElementById("live-message");
  var notice = document.getElementById("live-notice");

  function show(text, ok) {
    message.textContent = text;
    message.className = "alert alert-" + (ok ? "success" : "danger");
    message.hidden = false;
  }

  function cell(row, text, cls) {
    var td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (cls) { td.className = cls; }
    row.appendChild(td);
    return td;
  }

  function duration(seconds) {
    if (seconds === null) { return ""; }
    var m = Math.floor(seconds / 60), s = seconds % 60;
    return m + ":" + (s < 10 ? "0" : "") + s;
  }

  function listen(managerId, mode) {
    var body = new URLSearchParams({mode: mode});
    fetch(cfg.listenUrl + managerId, {
      method: "POST", credentials: "same-origin", body: body,
      headers: {"Accept": "application/json", "X-CSRFToken": cfg.csrf}
    }).then(function (r) {
      return r.json().catch(function () { return {ok: false, message: cfg.msgFailed}; });
    }).then(function (answer) { show(answer.message, answer.ok); },
            function () { show(cfg.msgFailed, false); });
  }

  function button(td, managerId, mode, label, cls) {
    var b = document.createElement("button");
    b.type = "button";
    b.className = "btn btn-sm " + cls + " me-1";
    b.textContent = label;
    b.dataset.mode = mode;
    b.addEventListener("click", function () { listen(managerId, mode); });
    td.appendChild(b);
  }

  function fill(tableId, rows, draw) {
    var tbody = document.querySelector("#" + tableId + " tbody");
    var fresh = document.createElement("tbody");
    rows.forEach(function (item) { fresh.appendChild(draw(item)); });
    tbody.replaceWith(fresh);
  }

  function draw(state) {
    notice.hidden = !state.notice;
    notice.textContent = state.notice;
    fill("live-managers", state.managers, function (m) {
      var tr = document.createElement("tr");
      tr.dataset.manager = m.id;
      tr.dataset.activity = m.activity;
      if (m.activity === "on_call") { tr.className = "table-success"; }
      else if (m.activity === "ringing") { tr.className = "table-warning"; }
      cell(tr, m.name);
      cell(tr, m.desk);
      cell(tr, m.duty, m.on_duty ? "text-success" : "text-muted");
      cell(tr, m.activity_label, "activity");
      cell(tr, m.since);
      cell(tr, duration(m.seconds));
      cell(tr, m.direction);
      cell(tr, m.customer);
      cell(tr, m.calls, "text-end");
      cell(tr, m.connected, "text-end");
      cell(tr, m.results, "text-end");
      var actions = cell(tr, "", "text-nowrap");
      if (m.can_listen) {
        button(actions, m.id, "listen", cfg.labelListen, "btn-outline-primary");
        button(actions, m.id, "whisper", cfg.labelWhisper, "btn-outline-secondary");
      }
      return tr;
    });
    function hotline(c) {
      var tr = document.createElement("tr");
      tr.dataset.call = c.id;
      cell(tr, c.at);
      cell(tr, c.caller);
      cell(tr, c.manager);
      return tr;
    }
    fill("live-ringing", state.ringing, hotline);
    fill("live-missed", state.missed, hotline);
    document.getElementById("live-missed-count").textContent = String(state.missed_today);
  }

  function poll() {
    fetch(cfg.stateUrl, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.json(); })
      .then(draw)
      .catch(function () { /* the next poll tries again */ })
      .then(function () { window.setTimeout(poll, Number(cfg.pollMs) || 2000); });
  }
  poll();
}());
