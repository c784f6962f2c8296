// The phone pages' one script (webui/templates/mobile/task.html): 呼叫 without
// leaving the page, then the call's live state, polled from GET /calls/<id>
// until it ends (as on the desktop: polling, not a held connection). Without
// this script the form still works: the dial posts and the page comes back.
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
