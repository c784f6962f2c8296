// The phone pages' one script (webui/templates/mobile/): on /m/, the due
// call-backs; on a task's page (mobile/task.html), 呼叫 without
// leaving the page, then the call's live state, polled from GET /calls/<id>
// until it ends (as on the desktop: polling, not a held connection). Without
// this script the form still works: the dial posts and the page comes back.
// Each time the call moves on (your phone rings, the customer's rings, you
// talk, it ends), the task's chips (status, attempts) and its list of calls
// are read again from this same page and swapped in; the dial's message
// ("your mobile is ringing") goes once it is no longer true. While the call
// is on, the result form says so (#live-call).

// /m/: the call-backs whose time has come, asked again every so often (the
// desktop's GET /manager/reminders), as cards that open the task's phone page
(function () {
  "use strict";
  var box = document.getElementById("reminders");
  if (!box) { return; }
  var cfg = box.dataset;
  function remind() {
    fetch(cfg.url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.json(); })
      .then(function (answer) {
        box.replaceChildren.apply(box, answer.due.map(function (task) {
          var card = document.createElement("a");
          card.className = "card reminder" + (task.overdue ? " reminder-overdue" : "");
          card.href = cfg.taskUrl + task.id;
          card.dataset.task = task.id;
          var title = document.createElement("span");
          title.className = "card-title";
          title.textContent = (task.overdue ? cfg.msgOverdue : cfg.msgDue) + " · " + task.name;
          var meta = document.createElement("span");
          meta.className = "card-meta";
          var at = document.createElement("span");
          at.className = "chip";
          at.textContent = task.at;
          meta.append(at);
          card.append(title, meta);
          return card;
        }));
        box.hidden = answer.due.length === 0;
      }, function () { /* try again at the next tick */ });
  }
  window.setInterval(remind, 1000 * cfg.seconds);
})();

(function () {
  "use strict";
  var panel = document.getElementById("call-panel");
  if (!panel) { return; }
  var cfg = panel.dataset;
  var state = document.getElementById("call-state");
  var message = document.getElementById("m-message");
  var form = document.getElementById("dial-form");
  var liveBox = document.getElementById("live-call");
  var following = null;
  // the states in which the dial's message ("pick up your phone") is still true
  var RINGING_YOU = ["requested", "manager_ringing"];

  function show(text, ok) {
    message.textContent = text;
    message.className = "flash " + (ok ? "flash-success" : "flash-danger");
    message.hidden = false;
  }

  // the parts of the page a call changes, taken from a fresh copy of it;
  // the result form (which the manager may be filling in) is left alone.
  // `ended`: the call is over (during one, the task is not dialable anyway)
  function refreshFacts(ended) {
    fetch(window.location.href, {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        ["task-meta", "task-calls"].forEach(function (id) {
          var now = document.getElementById(id), then = fresh.getElementById(id);
          if (now && then) { now.innerHTML = then.innerHTML; }
        });
        // no more attempts (or the task closed): no 呼叫 button either
        if (ended && form && !fresh.getElementById("dial-form")) { form.remove(); form = null; }
      }, function () { /* the page still works; a reload shows the facts */ });
  }

  function follow(callId) {
    following = callId;
    var field = document.querySelector("#result-form input[name=call_id]");
    if (field) { field.value = callId; }
    if (form) { form.querySelector("button").disabled = true; }
    (function tick() {
      if (following !== callId) { return; }
      fetch(cfg.callUrl + callId, {credentials: "same-origin",
                                   headers: {"Accept": "application/json"}})
        .then(function (r) { return r.json(); })
        .then(function (call) {
          state.textContent = call.progress;
          var changed = panel.dataset.state !== call.state;
          panel.dataset.state = call.state;
          if (RINGING_YOU.indexOf(call.state) < 0) { message.hidden = true; }
          if (liveBox) { liveBox.hidden = call.final; }
          if (changed) { refreshFacts(call.final); }
          if (call.final) {
            following = null;
            if (form) { form.querySelector("button").disabled = false; }
            var result = document.getElementById("result-form");
            if (result) { result.scrollIntoView({block: "start"}); }
          } else {
            window.setTimeout(tick, +cfg.pollMs);
          }
        }, function () { window.setTimeout(tick, 3 * cfg.pollMs); });
    })();
  }

  if (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var button = form.querySelector("button");
      button.disabled = true;
      fetch(form.action, {method: "POST", credentials: "same-origin", body: new FormData(form),
                          headers: {"Accept": "application/json"}})
        .then(function (r) { return r.json(); })
        .then(function (answer) {
          show(answer.message, answer.ok);
          if (answer.ok) { follow(String(answer.call_id)); } else { button.disabled = false; }
        }, function () { show(cfg.failed, false); button.disabled = false; });
    });
  }
  if (cfg.callId) { follow(cfg.callId); }
})();
