// The live parts of the aws landing page: each box talks to the server (plugins, CGI, media).
// Replies are shown with textContent only: nothing the server echoes back becomes markup.
(function () {
  'use strict';
  var $ = function (id) { return document.getElementById(id); };
  // Marks that this script was fetched, decoded (whatever Content-Encoding it came with) and ran.
  document.documentElement.dataset.demoJs = 'ran';

  function show(el, text, failed) {
    el.textContent = text;
    el.classList.toggle('error', !!failed);
  }

  function fail(el) {
    return function (e) { show(el, 'failed: ' + e.message, true); };
  }

  // Rejects on a status other than 2xx, with the server's own words.
  function checked(r) {
    if (r.ok) return r;
    return r.text().then(function (t) { throw new Error(r.status + ' ' + t.trim()); });
  }

  // Audio: the element fetches the file with Range requests; show how far it got.
  var player = $('player'), mediaState = $('media-state');
  var states = ['nothing', 'metadata', 'current data', 'future data (can play)', 'enough data (can play through)'];
  function mediaUpdate() {
    var buffered = player.buffered.length ? player.buffered.end(player.buffered.length - 1) : 0;
    show(mediaState, 'readyState ' + player.readyState + ': ' + states[player.readyState] +
      (player.duration ? ', ' + buffered.toFixed(0) + ' of ' + player.duration.toFixed(0) + ' s buffered' : ''));
    player.dataset.readyState = String(player.readyState);
  }
  ['loadedmetadata', 'loadeddata', 'canplay', 'canplaythrough', 'progress'].forEach(function (ev) {
    player.addEventListener(ev, mediaUpdate);
  });
  player.addEventListener('error', function () {
    show(mediaState, 'cannot load dynamic/demo.wav (make run writes it)', true);
  });
  mediaUpdate();

  // Server-sent events: the counter advances with each event.
  if (window.EventSource) {
    var count = 0, source = new EventSource('stream/events?interval=500');
    source.onmessage = function (e) {
      count += 1;
      $('sse-count').textContent = String(count);
      $('sse-last').textContent = '(last: "' + e.data + '")';
    };
  }

  // Echo: the body goes out, the same bytes come back.
  $('echo-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var out = $('echo-reply');
    show(out, 'sending…');
    fetch('echo', { method: 'POST', headers: { 'Content-Type': 'text/plain; charset=utf-8' }, body: $('echo-text').value })
      .then(checked)
      .then(function (r) { return r.text(); })
      .then(function (t) { show(out, t); })
      .catch(fail(out));
  });

  // Upload: XMLHttpRequest, because fetch reports no upload progress.
  $('upload-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var file = $('upload-file').files[0], bar = $('upload-progress'), out = $('upload-result');
    if (!file) { show(out, 'choose a file first', true); return; }
    var xhr = new XMLHttpRequest();
    xhr.open('POST', 'upload');
    xhr.upload.onprogress = function (p) {
      if (p.lengthComputable) { bar.max = p.total; bar.value = p.loaded; bar.dataset.loaded = String(p.loaded); }
    };
    xhr.onload = function () {
      if (xhr.status !== 201) { show(out, 'failed: ' + xhr.status + ' ' + xhr.responseText.trim(), true); return; }
      var reply = JSON.parse(xhr.responseText);
      show(out, 'stored ' + reply.size + ' bytes as ' + reply.name);
      out.dataset.name = reply.name;
      out.dataset.size = String(reply.size);
      if (reply.url) {
        var link = document.createElement('a');
        link.href = reply.url;
        link.textContent = ' (open)';
        out.appendChild(link);
      }
    };
    xhr.onerror = function () { show(out, 'failed: the connection broke', true); };
    bar.value = 0;
    show(out, 'uploading ' + file.size + ' bytes…');
    xhr.send(file);
  });

  // Math: C functions the plugin registered with their signatures; the host converts types.
  function math(path, params, el) {
    fetch('math/' + path + '?' + new URLSearchParams(params) + '&format=json')
      .then(checked)
      .then(function (r) { return r.json(); })
      .then(function (d) { show(el, String(d.result)); })
      .catch(fail(el));
  }
  $('math-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var w = $('math-w').value, h = $('math-h').value;
    math('area', { w: w, h: h }, $('math-area'));
    math('add', { a: w, b: h }, $('math-add'));
    math('fib', { n: $('math-n').value }, $('math-fib'));
  });

  // CGI: the form's own fields, posted as application/x-www-form-urlencoded.
  $('cgi-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var out = $('cgi-reply');
    fetch(e.target.action, { method: 'POST', body: new URLSearchParams(new FormData(e.target)) })
      .then(checked)
      .then(function (r) { return r.text(); })
      .then(function (t) { show(out, t); })
      .catch(fail(out));
  });
})();
