// The manager's workspace (webui/workspace.py): dial without leaving the page,
// follow the call live by polling GET /calls/<id> (about once a second, until
// it ends), remind of due call-backs, and progressive dial (自动连拨): after a
// result is filed, the next due task is dialed after a pause the manager can
// cancel; after a call that did not reach the customer, which the system files
// itself (自动结果), at once. While the carrier trunk is down the server answers
// reason "trunk": progressive dial waits and asks again (it never dials into a
// dead line) and goes on by itself when the line is back. No inline script
// anywhere: settings come from #workspace's data-*.
(function () {
  "use strict";
  var root = document.getElementById("workspace");
  if (!root) { return; }
  var cfg = root.dataset;
  var AUTODIAL = "khhf.autodial";
  var message = document.getElementById("ws-message");

  function show(text, kind) {
    message.textContent = text;
    message.className = "alert alert-" + (kind || "info");
  }

  function getJson(url) {
    return fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.json(); });
  }

  function post(url) {
    return fetch(url, {method: "POST", credentials: "same-origin",
                       headers: {"Accept": "application/json", "X-CSRFToken": cfg.csrf}})
      .then(function (r) {
        return r.json().catch(function () { return {ok: false, message: cfg.msgFailed}; });
      });
  }

  // -- progressive dial switch (kept in this browser) --------------------------------
  var toggle = document.getElementById("autodial-switch");
  function autodialOn() { return window.localStorage.getItem(AUTODIAL) === "1"; }
  function setAutodial(on) {
    window.localStorage.setItem(AUTODIAL, on ? "1" : "0");
    if (toggle) { toggle.checked = on; }
    var hidden = document.querySelector("#result-form input[name=autodial]");
    if (hidden) { hidden.value = on ? "1" : ""; }
    if (!on) { cancelCountdown(); }
  }

  // -- dialing -----------------------------------------------------------------------
  function dial(dialUrl, taskUrl, automatic) {
    return post(dialUrl).then(function (answer) {
      if (!answer.ok && automatic && answer.next) {
        // the calling rules refuse this customer now (called too often, too
        // recently...): progressive dial goes on with the next task
        show(answer.message, "warning");
        dialNext();
        return;
      }
      if (!answer.ok) {
        show(answer.message, "danger");
        setAutodial(false);
        return;
      }
      var target = new URL(taskUrl, window.location.href);
      if (target.pathname === window.location.pathname && panel) {
        window.history.replaceState(null, "", "#call-" + answer.call_id);
        follow(answer.call_id);
      } else {
        window.location.href = target.pathname + "#call-" + answer.call_id;
      }
    }, function () { show(cfg.msgFailed, "danger"); setAutodial(false); });
  }

  document.querySelectorAll("form.js-dial").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var button = form.querySelector("button");
      button.disabled = true;
      dial(form.action, form.dataset.taskUrl).then(function () { button.disabled = false; });
    });
  });

  // -- the call's live progress ------------------------------------------------------
  var panel = document.getElementById("call-panel");
  // the result form's "the call is still on" box (webui/templates/manager/task.html)
  var liveBox = document.getElementById("live-call");
  var following = null;
  function follow(callId) {
    if (!panel || following === callId) { return; }
    following = callId;
    var state = document.getElementById("call-state");
    var callField = document.querySelector("#result-form input[name=call_id]");
    if (callField) { callField.value = callId; }
    function tick() {
      if (following !== callId) { return; }
      getJson(cfg.callUrl + callId).then(function (call) {
        state.textContent = call.progress;
        var changed = panel.dataset.state !== call.state;
        panel.dataset.state = call.state;
        panel.dataset.outcome = call.outcome || "";
        if (liveBox) { liveBox.hidden = call.final; }
        if (call.final) {
          following = null;
          refreshFacts();
          if (call.filed_by_system) {
            // not reached: the system filed it by the task type's rule; nothing to
            // ask, and progressive dial moves on at once (the pause counts from the
            // call's end, not from when this page noticed it)
            show(cfg.msgFiledBySystem + " " + call.label, "secondary");
            if (autodialOn() && !countdown) { dialNext(call.ended_seconds_ago || 0); }
            return;
          }
          var form = document.getElementById("result-form");
          if (form) {
            form.classList.add("border-primary");
            form.querySelector("select").focus();
          }
        } else {
          // the task's status and attempts move with the call (拨打中, 1/3, ...)
          if (changed) { refreshFacts(); }
          window.setTimeout(tick, +cfg.pollMs);
        }
      }, function () { window.setTimeout(tick, 3 * cfg.pollMs); });
    }
    tick();
  }

  // as a call moves on, the task's facts and its calls as the server now has them
  // (the result form is left alone: the manager may be typing a note)
  function refreshFacts() {
    fetch(window.location.pathname, {credentials: "same-origin"}).then(function (response) {
      return response.ok ? response.text() : null;
    }).then(function (html) {
      if (!html) { return; }
      var fresh = new DOMParser().parseFromString(html, "text/html");
      ["task-facts", "task-calls"].forEach(function (id) {
        var now = document.getElementById(id), then = fresh.getElementById(id);
        if (now && then) { now.replaceWith(document.importNode(then, true)); }
      });
    }, function () {});
  }

  if (panel) {
    var fromHash = /^#call-(\d+)$/.exec(window.location.hash);
    var callId = fromHash ? fromHash[1] : panel.dataset.callId;
    if (callId) { follow(callId); }
  }

  // -- progressive dial: the pause before the next call ------------------------------
  var countdown = null;
  var paused = null;  // waiting for the trunk to come back
  var statusBox = document.getElementById("autodial-status");
  function cancelCountdown() {
    if (countdown) { window.clearInterval(countdown); countdown = null; }
    if (paused) { window.clearTimeout(paused); paused = null; }
    if (statusBox) { statusBox.classList.add("d-none"); }
  }

  // `elapsed`: seconds of the pause already gone (since the call ended)
  function dialNext(elapsed) {
    getJson(cfg.nextUrl).then(function (next) {
      if (!next.task && next.reason === "trunk") {
        show(next.message, "danger");
        paused = window.setTimeout(function () { paused = null; if (autodialOn()) { dialNext(); } },
                                   1000 * next.retry_seconds);
        return;
      }
      if (!next.task) {
        show(next.message, "secondary");
        setAutodial(false);
        return;
      }
      var deadline = Date.now() + 1000 * Math.max(0, +cfg.autodialSeconds - (elapsed || 0));
      var text = document.getElementById("autodial-text");
      function say() {
        text.textContent = next.message + " " +
          Math.max(0, Math.ceil((deadline - Date.now()) / 1000)) + "s";
      }
      statusBox.classList.remove("d-none");
      statusBox.dataset.task = next.task.id;
      say();
      countdown = window.setInterval(function () {
        say();
        if (Date.now() >= deadline) {
          cancelCountdown();
          dial(next.task.dial_url, next.task.url, true);
        }
      }, 100);
    }, function () { show(cfg.msgFailed, "danger"); setAutodial(false); });
  }

  document.getElementById("autodial-cancel").addEventListener("click", function () {
    setAutodial(false);
  });
  if (toggle) {
    toggle.checked = autodialOn();
    toggle.addEventListener("change", function () {
      setAutodial(toggle.checked);
      if (toggle.checked) { dialNext(0); }
    });
    // back home after filing a result with progressive dial on: the next one
    if (autodialOn() && new URLSearchParams(window.location.search).get("autodial") === "1") {
      dialNext(0);
    }
  }
  var hidden = document.querySelector("#result-form input[name=autodial]");
  if (hidden) { hidden.value = autodialOn() ? "1" : ""; }

  // -- call-back reminders -----------------------------------------------------------
  var reminders = document.getElementById("reminders");
  function remind() {
    getJson(cfg.remindersUrl).then(function (answer) {
      reminders.replaceChildren();
      answer.due.forEach(function (task) {
        var row = document.createElement("div");
        row.className = "alert mb-2 d-flex justify-content-between align-items-center " +
          (task.overdue ? "alert-warning reminder-overdue" : "alert-info");
        row.dataset.task = task.id;
        var label = document.createElement("span");
        label.textContent = (task.overdue ? cfg.msgOverdue : cfg.msgDue) + " · " +
          task.name + " · " + task.at;
        var link = document.createElement("a");
        link.className = "btn btn-sm btn-primary";
        link.href = task.url;
        link.textContent = cfg.msgOpen;
        row.append(label, link);
        reminders.append(row);
      });
      reminders.classList.toggle("d-none", answer.due.length === 0);
    }, function () { /* try again at the next tick */ });
  }
  remind();
  window.setInterval(remind, 1000 * cfg.reminderSeconds);
}());
