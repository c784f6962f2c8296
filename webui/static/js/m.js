// The phone pages' one script (webui/templates/mobile/task.html): 呼叫 without
// leaving the page, then the call's live state, polled from GET /calls/<id>
// until it ends (as on the desktop: polling, not a held connection). Without
// this script the form still works: the dial posts and the page comes back.
// When the call ends, the task's chips (status, attempts) and its list of
// calls are read again from this same page and swapped in.
(function () {
  "use strict";
  var panel = document.getElementById("call-panel");
  if (!panel) { return; }
  var cfg = panel.dataset;
  var state = document.getElementById("call-state");
  var message = document.getElementById("m-message");
  var form = document.getElementById("dial-form");
  var following = null;

  function show(text, ok) {
    message.textContent = text;
    message.className = "flash " + (ok ? "flash-success" : "flash-danger");
    message.hidden = false;
  }

  // the parts of the page a call changes, taken from a fresh copy of it;
  // the result form (which the manager may be filling in) is left alone
  function refreshFacts() {
    fetch(window.location.href, {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        ["task-meta", "task-calls"].forEach(function (id) {
          var now = document.getElementById(id), then = fresh.getElementById(id);
          if (now && then) { now.innerHTML = then.innerHTML; }
        });
        // no more attempts (or the task closed): no 呼叫 button either
        if (form && !fresh.getElementById("dial-form")) { form.remove(); form = null; }
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
          panel.dataset.state = call.state;
          if (call.final) {
            following = null;
            message.hidden = true;  // "your phone is ringing" is no longer true
            refreshFacts();
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
