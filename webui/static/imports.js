// The import page while a job runs: poll its status once a second, move the
// progress bar, and reload the page when the job has moved on.
(function () {
  var box = document.getElementById('import-progress');
  if (!box) { return; }
  var url = box.dataset.url, shown = box.dataset.status;
  var bar = document.getElementById('progress');
  function poll() {
    fetch(url, {credentials: 'same-origin'}).then(function (r) { return r.json(); }).then(function (s) {
      if (s.status !== shown) { window.location.reload(); return; }
      var pct = s.total ? Math.min(100, Math.floor(100 * s.done / s.total)) : 0;
      bar.style.width = pct + '%';
      bar.textContent = pct + '% (' + s.done + ' / ' + s.total + ')';
      setTimeout(poll, 1000);
    }).catch(function () { setTimeout(poll, 3000); });
  }
  poll();
})();
