import { createHash } from 'node:crypto'

/**
 * The live view's page: one self-contained HTML document (inline style and script, no
 * external assets) that polls `<basePath>/json` every second, and the headers it is served
 * with. Its Content-Security-Policy allows exactly this script and style, by hash.
 */

const STYLE = `
:root{color-scheme:light dark;--bg:#fff;--fg:#1d2125;--muted:#5f6b76;--line:#d9dee3;--card:#f4f6f8;--warn:#a15c00;--bad:#b3261e;--ok:#1b7f3b}
@media (prefers-color-scheme:dark){:root{--bg:#15181b;--fg:#e6e9ec;--muted:#9aa5b1;--line:#2c3238;--card:#1e2328;--warn:#f0a33a;--bad:#ff7b72;--ok:#5cc27c}}
*{box-sizing:border-box}
body{margin:0;padding:20px 24px;background:var(--bg);color:var(--fg);font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
h1{font-size:18px;margin:0 0 4px}
h2{font-size:15px;margin:24px 0 8px}
.status{color:var(--muted);font-size:13px}
.status.error{color:var(--bad)}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin-top:14px}
.card{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:8px 14px;min-width:96px}
.card .n{font-size:22px;font-weight:600;font-variant-numeric:tabular-nums}
.card .l{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:4px 10px;border-bottom:1px solid var(--line);white-space:nowrap}
th{color:var(--muted);font-weight:600;font-size:12px}
td.num,th.num{text-align:right}
.state{display:inline-block;padding:0 6px;border-radius:4px;background:var(--card);border:1px solid var(--line);font-size:12px}
.state-active{color:var(--ok)}
.state-handshaking,.state-new{color:var(--warn)}
.soon{color:var(--bad);font-weight:600}
.empty{color:var(--muted);padding:8px 10px}
.cols{display:flex;flex-wrap:wrap;gap:8px 40px;align-items:flex-start}
.cols>div:first-child{flex:0 0 auto}
.cols>div:last-child{flex:1 1 600px;min-width:0}
.scroll{overflow-x:auto}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
`

const SCRIPT = `
(function () {
  'use strict';
  var base = document.body.getAttribute('data-base') || '';
  var url = base.replace(/\\/+$/, '') + '/json';
  var STATES = ['new', 'handshaking', 'idle', 'active', 'upgraded'];
  var busy = false;
  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function dur(ms) {
    if (ms === null || ms === undefined) return '-';
    if (ms < 1000) return ms + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(1) + ' s';
    if (ms < 3600000) return Math.floor(ms / 60000) + ' m ' + Math.floor((ms % 60000) / 1000) + ' s';
    return Math.floor(ms / 3600000) + ' h ' + Math.floor((ms % 3600000) / 60000) + ' m';
  }
  function bytes(n) {
    if (n < 1024) return n + ' B';
    if (n < 1048576) return (n / 1024).toFixed(1) + ' KiB';
    if (n < 1073741824) return (n / 1048576).toFixed(1) + ' MiB';
    return (n / 1073741824).toFixed(2) + ' GiB';
  }
  function remote(c) {
    var a = c.remoteAddress === null ? '?' : String(c.remoteAddress);
    if (a.indexOf(':') >= 0) a = '[' + a + ']';
    return c.remotePort === null ? a : a + ':' + c.remotePort;
  }
  function proto(c) {
    var p = c.httpVersion === null ? '-' : (c.httpVersion === '2.0' ? 'h2' : 'HTTP/' + c.httpVersion);
    if (c.secure) p += ' ' + (c.tlsVersion || 'TLS');
    var w = c.webSocket;
    if (w) {
      p += ' WebSocket';
      if (w.pingRtt !== null) p += ' rtt ' + w.pingRtt + ' ms';
      if (w.closeCode !== null) p += ' (' + w.closeCode + ')';
    }
    return p;
  }
  function row(cells, attrs) {
    var tr = el('tr');
    for (var k in attrs) tr.setAttribute(k, attrs[k]);
    for (var i = 0; i < cells.length; i++) tr.appendChild(cells[i]);
    return tr;
  }
  function td(text, cls) { return el('td', cls, text); }
  function fill(id, rows, span, emptyText) {
    var body = $(id);
    body.textContent = '';
    if (rows.length === 0) {
      var tr = el('tr'); var cell = el('td', 'empty', emptyText);
      cell.colSpan = span; tr.appendChild(cell); body.appendChild(tr); return;
    }
    for (var i = 0; i < rows.length; i++) body.appendChild(rows[i]);
  }
  function render(d) {
    var s = d.snapshot;
    var cards = $('counts');
    cards.textContent = '';
    var list = ['total'].concat(STATES);
    for (var i = 0; i < list.length; i++) {
      var c = el('div', 'card'); c.setAttribute('data-state', list[i]);
      c.appendChild(el('div', 'n', s[list[i]]));
      c.appendChild(el('div', 'l', list[i]));
      cards.appendChild(c);
    }
    var rows = [];
    for (var j = 0; j < d.connections.length; j++) {
      var x = d.connections[j];
      var st = el('td'); st.appendChild(el('span', 'state state-' + x.state, x.state));
      var dl = x.deadline;
      var left = td(dl === null ? '-' : dur(dl.msLeft), 'num' + (dl !== null && dl.msLeft < 1000 ? ' soon' : ''));
      rows.push(row([
        td(x.id, 'num'), td(remote(x)), td(proto(x)), st, td(dur(x.ageMs), 'num'),
        td(dl === null ? '-' : dl.kind), left, td(x.requests, 'num'),
        td(bytes(x.bytesRead), 'num'), td(bytes(x.bytesWritten), 'num')
      ], { 'data-id': String(x.id), 'data-state': String(x.state) }));
    }
    fill('live', rows, 10, 'no live connections');
    $('truncated').textContent = d.truncated ? 'showing the ' + d.connections.length + ' oldest of ' + s.total : '';
    var reasons = Object.keys(d.recentClosesByReason).sort(function (a, b) {
      return d.recentClosesByReason[b] - d.recentClosesByReason[a] || (a < b ? -1 : 1);
    });
    var rr = [];
    for (var k = 0; k < reasons.length; k++) {
      rr.push(row([td(reasons[k]), td(d.recentClosesByReason[reasons[k]], 'num'),
        td(s.closedByReason[reasons[k]] || 0, 'num')], { 'data-reason': reasons[k] }));
    }
    fill('reasons', rr, 3, 'no closes yet');
    var cr = [];
    for (var m = 0; m < d.recentCloses.length && m < 50; m++) {
      var r = d.recentCloses[m];
      cr.push(row([
        td(new Date(r.closedAt).toLocaleTimeString()), td(r.id, 'num'), td(remote(r)),
        td(r.reason + (r.errorCode ? ' (' + r.errorCode + ')' : '') +
          (r.webSocket && r.webSocket.closeCode !== null ? ' ws ' + r.webSocket.closeCode : '')),
        td(r.stateAtClose || '-'),
        td(dur(r.durationMs), 'num'), td(r.requests, 'num'),
        td(bytes(r.bytesRead), 'num'), td(bytes(r.bytesWritten), 'num')
      ], { 'data-id': String(r.id), 'data-reason': String(r.reason) }));
    }
    fill('closes', cr, 9, 'no closes yet');
    var status = $('status');
    status.className = 'status';
    status.textContent = 'updated ' + new Date(d.generatedAt).toLocaleTimeString() + ' \\u00b7 every 1 s';
  }
  function poll() {
    if (busy || document.hidden) return;
    busy = true;
    fetch(url, { cache: 'no-store', credentials: 'same-origin', headers: { accept: 'application/json' } })
      .then(function (res) {
        if (!res.ok) throw new Error('HTTP ' + res.status);
        return res.json();
      })
      .then(render)
      .catch(function (err) {
        var status = $('status');
        status.className = 'status error';
        status.textContent = 'cannot load ' + url + ': ' + (err && err.message ? err.message : err);
      })
      .then(function () { busy = false; });
  }
  poll();
  setInterval(poll, 1000);
  document.addEventListener('visibilitychange', poll);
})();
`

const sha256 = (text: string): string =>
  `'sha256-${createHash('sha256').update(text).digest('base64')}'`

export const HTML_HEADERS: Record<string, string> = Object.freeze({
  'content-type': 'text/html; charset=utf-8',
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  // The page's own script and style only (by hash), fetches to its own origin only.
  'content-security-policy': `default-src 'none'; script-src ${sha256(SCRIPT)}; style-src ${sha256(STYLE)}; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
}) as Record<string, string>

const HTML_ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c] as string)
}

/** The page for a view served under `basePath` (its JSON is polled at `<basePath>/json`). */
export function renderPage(basePath: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>connguard · live connections</title>
<style>${STYLE}</style>
</head>
<body data-base="${escapeHtml(basePath)}">
<h1>connguard · live connections</h1>
<div id="status" class="status">loading…</div>
<div id="counts" class="cards"></div>
<h2>Live connections <span id="truncated" class="status"></span></h2>
<div class="scroll"><table>
<thead><tr><th class="num">id</th><th>remote</th><th>protocol</th><th>state</th><th class="num">age</th><th>deadline</th><th class="num">left</th><th class="num">requests</th><th class="num">in</th><th class="num">out</th></tr></thead>
<tbody id="live"></tbody>
</table></div>
<div class="cols">
<div>
<h2>Recent closes by reason</h2>
<table>
<thead><tr><th>reason</th><th class="num">recent</th><th class="num">since start</th></tr></thead>
<tbody id="reasons"></tbody>
</table>
</div>
<div>
<h2>Recent closes</h2>
<div class="scroll"><table>
<thead><tr><th>time</th><th class="num">id</th><th>remote</th><th>reason</th><th>state</th><th class="num">duration</th><th class="num">requests</th><th class="num">in</th><th class="num">out</th></tr></thead>
<tbody id="closes"></tbody>
</table></div>
</div>
</div>
<script>${SCRIPT}</script>
</body>
</html>
`
}
