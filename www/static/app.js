// Tiny script for the aws landing page: fetch data.json and show its name.
(function () {
  var out = document.getElementById('status');
  if (!out || !window.fetch) return;
  fetch('static/data.json')
    .then(function (r) { return r.json(); })
    .then(function (d) { out.textContent = 'fetched static/data.json: ' + d.name + ', ' + d.files.length + ' files'; })
    .catch(function (e) { out.textContent = 'fetch failed: ' + e; });
})();
