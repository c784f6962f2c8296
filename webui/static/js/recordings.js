// A recording's page (webui/recordings.py): the play button asks the server
// for the audio URL (POST: the play is written to the operation log once),
// then the browser's audio element plays it, seeking by HTTP Range requests.
// No inline script: settings come from #player's data-*.
(function () {
  "use strict";
  var player = document.getElementById("player");
  if (!player) { return; }
  var audio = document.getElementById("recording-audio");
  var form = document.getElementById("play-form");
  var message = document.getElementById("player-message");
  var started = false;

  function failed() {
    message.textContent = player.dataset.failed;
    message.className = "mt-2 alert alert-danger";
  }

  function start() {
    if (started) { audio.play(); return; }
    var button = form.querySelector("button");
    button.disabled = true;
    fetch(form.action, {method: "POST", credentials: "same-origin",
                        headers: {"Accept": "application/json",
                                  "X-CSRFToken": player.dataset.csrf}})
      .then(function (r) { return r.ok ? r.json() : {ok: false}; })
      .then(function (answer) {
        button.disabled = false;
        if (!answer.ok) { failed(); return; }
        started = true;
        audio.preload = "auto";  // load now: seeking needs the length
        audio.src = answer.url;
        audio.play().catch(function () { /* the controls still play it */ });
      }, function () { button.disabled = false; failed(); });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    start();
  });
  // the audio element's own play button, before the play button was pressed
  audio.addEventListener("play", function () { if (!started) { audio.pause(); start(); } });
  audio.addEventListener("error", function () { if (started) { failed(); } });
})();
