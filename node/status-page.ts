/**
 * The status page at `/`: the node's status report (`GET /v1/status`) for a person in a browser,
 * polled every second: the health line, every member (status, zone, lifecycle, phi, share of the
 * ring, hints), the ring drawn as arcs in proportion to ownership, and sparklines of the events
 * and queries this node coordinated per second and their p50/p99 latency over the last 5 minutes.
 *
 * One self-contained document: inline style and script, nothing loaded but /v1/status from the
 * same origin, no build step. Its Content-Security-Policy allows exactly that (the script and the
 * style by their hashes). Everything taken from the status goes into the DOM as text
 * (`textContent`, attributes), never as markup. With client tokens the page asks for one, keeps it
 * in the tab's sessionStorage and sends it as `Authorization: Bearer`.
 *
 * Deliberately not: a view of other nodes than this one (a browser may only ask the node that
 * served the page; each node's view is its own), or history beyond what the open tab has seen.
 */
import { createHash } from 'node:crypto';

const STYLE = String.raw`
:root { --fg: #1d2330; --muted: #687083; --bg: #f6f7f9; --card: #fff; --line: #e2e5ea; --up: #1f8a4c; --down: #c62828; --warn: #b26a00; }
@media (prefers-color-scheme: dark) { :root { --fg: #e4e7ec; --muted: #9aa3b2; --bg: #14171c; --card: #1c2027; --line: #2c323c; --up: #43c27a; --down: #ef5350; --warn: #e0a030; } }
* { box-sizing: border-box; }
body { margin: 0; padding: 16px 20px; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; align-items: baseline; gap: 12px; flex-wrap: wrap; margin-bottom: 10px; }
h1 { font-size: 20px; margin: 0; }
h2 { font-size: 13px; font-weight: 600; margin: 0 0 8px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.muted { color: var(--muted); }
#health { margin: 0 0 12px; padding: 8px 12px; border-radius: 6px; font-weight: 600; background: var(--card); border-left: 4px solid var(--muted); }
#health.healthy { border-left-color: var(--up); }
#health.degraded { border-left-color: var(--down); }
#problem { color: var(--down); margin: 0 0 12px; }
.grid { display: grid; grid-template-columns: minmax(0, 1fr) 260px; gap: 12px; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); gap: 12px; margin-top: 12px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { font-weight: 600; color: var(--muted); font-size: 12px; }
td.num, th.num { text-align: right; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; vertical-align: baseline; }
.status { font-weight: 600; }
.status.up { color: var(--up); }
.status.down { color: var(--down); }
.self { color: var(--muted); font-weight: normal; }
#ring { display: block; width: 100%; max-width: 230px; margin: 0 auto; }
#ring text { fill: var(--fg); font-size: 13px; }
#ring .ring-base { fill: none; stroke: var(--line); stroke-width: 26; }
#ring .ring-arc { fill: none; stroke-width: 26; }
#ring .ring-arc.down { opacity: .35; }
.chart-head { display: flex; justify-content: space-between; align-items: baseline; gap: 8px; }
.chart-head h2 { white-space: nowrap; }
.now { font-size: 17px; font-weight: 600; font-variant-numeric: tabular-nums; white-space: nowrap; }
.caption { font-size: 12px; margin: 8px 0 0; text-align: center; }
.chart { display: block; width: 100%; height: 64px; margin-top: 4px; }
.chart .grid-line { stroke: var(--line); stroke-width: 1; }
.chart path { fill: none; stroke-width: 1.6; vector-effect: non-scaling-stroke; }
.chart .a { stroke: #4e79a7; }
.chart .b { stroke: #e15759; }
.axis { display: flex; justify-content: space-between; font-size: 11px; color: var(--muted); }
.key-a { color: #4e79a7; } .key-b { color: #e15759; }
footer { margin-top: 12px; font-size: 12px; }
form { max-width: 420px; }
form input { width: 100%; padding: 6px 8px; margin: 6px 0 10px; font: inherit; color: inherit; background: var(--bg); border: 1px solid var(--line); border-radius: 4px; }
form button { padding: 6px 14px; font: inherit; }
[hidden] { display: none !important; }
@media (max-width: 800px) { .grid { grid-template-columns: 1fr; } }
`;

const BODY = String.raw`
<header>
  <h1>Tally</h1>
  <span id="cluster" class="muted"></span>
  <span id="updated" class="muted"></span>
</header>
<p id="problem" hidden></p>
<form id="token-form" class="card" hidden>
  <h2>Client token</h2>
  <p id="token-why"></p>
  <label for="token">Token (kept in this tab only)</label>
  <input id="token" type="password" autocomplete="off" required>
  <button type="submit">Show the status</button>
</form>
<main id="dash" hidden>
  <p id="health"></p>
  <div class="grid">
    <section class="card">
      <h2>Members</h2>
      <table>
        <thead><tr><th>ID</th><th>Address</th><th>Zone</th><th>Status</th><th>Lifecycle</th><th class="num">Phi</th><th class="num">Owns</th><th class="num">Hints</th></tr></thead>
        <tbody id="members"></tbody>
      </table>
    </section>
    <section class="card">
      <h2>Ring</h2>
      <svg id="ring" viewBox="0 0 200 200" role="img" aria-label="share of the ring each member is first replica for">
        <circle class="ring-base" cx="100" cy="100" r="80"></circle>
        <g id="ring-arcs"></g>
        <text id="ring-label" x="100" y="96" text-anchor="middle"></text>
        <text id="ring-sub" x="100" y="114" text-anchor="middle"></text>
      </svg>
      <p class="caption muted">Each arc: the share of the ring a member is first replica for.</p>
    </section>
  </div>
  <div class="charts">
    <section class="card" id="chart-events">
      <div class="chart-head"><h2>Events written /s</h2><span class="now"></span></div>
      <svg class="chart" viewBox="0 0 300 60" preserveAspectRatio="none"></svg>
      <div class="axis"><span>5 min ago</span><span class="max"></span><span>now</span></div>
    </section>
    <section class="card" id="chart-queries">
      <div class="chart-head"><h2>Queries read /s</h2><span class="now"></span></div>
      <svg class="chart" viewBox="0 0 300 60" preserveAspectRatio="none"></svg>
      <div class="axis"><span>5 min ago</span><span class="max"></span><span>now</span></div>
    </section>
    <section class="card" id="chart-write-latency">
      <div class="chart-head"><h2>Write latency</h2><span class="now"></span></div>
      <svg class="chart" viewBox="0 0 300 60" preserveAspectRatio="none"></svg>
      <div class="axis"><span>5 min ago</span><span><span class="key-a">p50</span> <span class="key-b">p99</span> <span class="max"></span></span><span>now</span></div>
    </section>
    <section class="card" id="chart-read-latency">
      <div class="chart-head"><h2>Read latency</h2><span class="now"></span></div>
      <svg class="chart" viewBox="0 0 300 60" preserveAspectRatio="none"></svg>
      <div class="axis"><span>5 min ago</span><span><span class="key-a">p50</span> <span class="key-b">p99</span> <span class="max"></span></span><span>now</span></div>
    </section>
  </div>
  <footer class="muted"><span id="load-note"></span> <span id="process"></span></footer>
</main>
`;

// Plain ES2017 with no template literals (this file holds it in one), run in the browser.
const SCRIPT = String.raw`
'use strict';
(function () {
  var POLL_MS = 1000;
  var FETCH_TIMEOUT_MS = 3000;
  var WINDOW_MS = 5 * 60 * 1000;
  var MAX_SAMPLES = 600;
  var TOKEN_KEY = 'tally.clientToken';
  var PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#8cd17d', '#d37295', '#499894'];
  var SVG_NS = 'http://www.w3.org/2000/svg';
  var samples = [];
  var last = null;
  var waitingForToken = false;
  var num = new Intl.NumberFormat('en', { maximumFractionDigits: 1 });

  function el(id) { return document.getElementById(id); }
  function text(node, s) { node.textContent = s; return node; }
  function make(tag, cls, s) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (s !== undefined) e.textContent = s;
    return e;
  }
  function svg(tag, attrs) {
    var e = document.createElementNS(SVG_NS, tag);
    for (var k in attrs) e.setAttribute(k, String(attrs[k]));
    return e;
  }
  function token() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (e) { return ''; }
  }
  function isNum(x) { return typeof x === 'number' && isFinite(x); }
  function ms(x) { return isNum(x) ? (x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : String(Math.round(x))) : '–'; }
  function perS(x) { return isNum(x) ? (x < 100 ? num.format(x) : num.format(Math.round(x))) : '–'; }
  function mb(x) { return isNum(x) ? Math.round(x / 1048576) + ' MB' : '?'; }

  function problem(message) {
    var p = el('problem');
    p.hidden = message === '';
    text(p, message);
  }

  function clearDashboard() {
    el('dash').hidden = true;
    el('members').replaceChildren();
    el('ring-arcs').replaceChildren();
    text(el('cluster'), '');
    text(el('updated'), '');
    samples = [];
    last = null;
  }

  function askForToken(why) {
    clearDashboard();
    waitingForToken = true;
    text(el('token-why'), why);
    el('token-form').hidden = false;
    el('token').focus();
  }

  el('token-form').addEventListener('submit', function (ev) {
    ev.preventDefault();
    try { sessionStorage.setItem(TOKEN_KEY, el('token').value.trim()); } catch (e) { /* a tab without storage asks again */ }
    el('token').value = '';
    el('token-form').hidden = true;
    waitingForToken = false;
    poll();
  });

  function poll() {
    var t = token();
    var headers = t ? { Authorization: 'Bearer ' + t } : {};
    var ctl = new AbortController();
    var timer = setTimeout(function () { ctl.abort(); }, FETCH_TIMEOUT_MS);
    fetch('/v1/status', { headers: headers, cache: 'no-store', signal: ctl.signal })
      .then(function (res) {
        if (res.status === 401) {
          askForToken(t ? 'The node refused this token: enter another.' : 'This node needs a client token to show its status.');
          return;
        }
        return res.json().then(function (body) {
          if (!res.ok) {
            var e = body && body.error;
            problem('The node answered ' + res.status + (e ? ': ' + e.code + ' ' + e.message : ''));
            return;
          }
          problem('');
          render(body, Date.now());
        });
      })
      .catch(function (err) {
        problem('Cannot reach the node (' + (err && err.name === 'AbortError' ? 'no answer in ' + FETCH_TIMEOUT_MS / 1000 + ' s' : String(err && err.message)) + '); the figures below are as last seen.');
      })
      .then(function () {
        clearTimeout(timer);
        if (!waitingForToken) setTimeout(poll, POLL_MS);
      });
  }

  function render(s, now) {
    if (!s || !Array.isArray(s.members)) { problem('The node sent a status this page cannot read.'); return; }
    el('dash').hidden = false;
    text(el('cluster'), 'cluster ' + s.cluster + ', rf ' + s.rf + ', as seen from ' + s.nodeId + ' (' + s.address + ')');
    text(el('updated'), 'updated ' + new Date(now).toLocaleTimeString());
    var health = el('health');
    text(health, s.health);
    health.className = /^healthy/.test(String(s.health)) ? 'healthy' : 'degraded';
    var colours = Object.create(null); // keyed by member id, whatever it is (even __proto__)
    s.members.forEach(function (m, i) { colours[m.id] = PALETTE[i % PALETTE.length]; });
    members(s.members, colours);
    ring(s.members, colours, s.rf);
    load(s, now);
  }

  function members(list, colours) {
    var rows = list.map(function (m) {
      var tr = make('tr', 'member');
      tr.setAttribute('data-member', m.id);
      var id = make('td');
      var sw = make('span', 'swatch');
      sw.style.background = colours[m.id];
      id.append(sw, make('span', 'member-id', m.id));
      if (m.self) id.append(make('span', 'self', ' (this node)'));
      var status = make('td', 'status ' + (m.status === 'up' ? 'up' : 'down'), m.status);
      if (m.reason) status.title = m.reason;
      var phi = m.self ? '–' : !isNum(m.phi) ? '?' : m.phi >= 100 ? '>100' : m.phi.toFixed(1);
      var hints = make('td', 'num', String(m.hintsPending === undefined ? 0 : m.hintsPending));
      if (m.hintsDropped > 0) hints.title = m.hintsDropped + ' dropped or expired (repair heals those)';
      tr.append(id, make('td', '', m.address), make('td', '', m.zone), status, make('td', '', m.lifecycle), make('td', 'num', phi),
        make('td', 'num', isNum(m.ownership) ? (m.ownership * 100).toFixed(1) + '%' : '?'), hints);
      return tr;
    });
    el('members').replaceChildren.apply(el('members'), rows);
  }

  function point(deg, r) {
    var a = (deg - 90) * Math.PI / 180;
    return (100 + r * Math.cos(a)).toFixed(2) + ' ' + (100 + r * Math.sin(a)).toFixed(2);
  }

  function ring(list, colours, rf) {
    var owners = list.filter(function (m) { return isNum(m.ownership) && m.ownership > 0; });
    var total = owners.reduce(function (a, m) { return a + m.ownership; }, 0);
    var gap = owners.length > 1 ? 1.2 : 0;
    var at = 0;
    var arcs = owners.map(function (m) {
      var sweep = total > 0 ? m.ownership / total * 360 : 0;
      var cls = 'ring-arc' + (m.status === 'up' ? '' : ' down');
      var shape;
      if (sweep >= 359.9) {
        shape = svg('circle', { cx: 100, cy: 100, r: 80, class: cls, 'data-member': m.id, stroke: colours[m.id] });
      } else {
        var d = 'M ' + point(at + gap / 2, 80) + ' A 80 80 0 ' + (sweep - gap > 180 ? 1 : 0) + ' 1 ' + point(at + sweep - gap / 2, 80);
        shape = svg('path', { d: d, class: cls, 'data-member': m.id, stroke: colours[m.id] });
      }
      var title = svg('title', {});
      title.textContent = m.id + ': ' + (m.ownership * 100).toFixed(1) + '% of the ring (' + m.status + ')';
      shape.append(title);
      at += sweep;
      return shape;
    });
    el('ring-arcs').replaceChildren.apply(el('ring-arcs'), arcs);
    var up = list.filter(function (m) { return m.status === 'up'; }).length;
    text(el('ring-label'), up + ' of ' + list.length + ' up');
    text(el('ring-sub'), 'rf ' + rf);
  }

  function load(s, now) {
    var l = s.load;
    if (!l || !l.writes || !l.reads) {
      text(el('load-note'), 'This node does not report its load.');
      return;
    }
    var p = s.process || {};
    var sample = { t: now, events: null, queries: null, wp50: l.writes.p50Ms, wp99: l.writes.p99Ms, rp50: l.reads.p50Ms, rp99: l.reads.p99Ms, cpu: null };
    // Rates are differences of totals; a restarted node (another generation) starts them afresh.
    if (last && last.node === s.nodeId && last.generation === s.generation && now > last.t) {
      var dt = (now - last.t) / 1000;
      if (l.writes.units >= last.events) sample.events = (l.writes.units - last.events) / dt;
      if (l.reads.units >= last.queries) sample.queries = (l.reads.units - last.queries) / dt;
      if (isNum(p.cpuUserMs) && isNum(last.cpuMs)) sample.cpu = (p.cpuUserMs + p.cpuSystemMs - last.cpuMs) / 10 / dt;
    } else if (last) {
      samples = [];
    }
    last = { node: s.nodeId, generation: s.generation, t: now, events: l.writes.units, queries: l.reads.units, cpuMs: isNum(p.cpuUserMs) ? p.cpuUserMs + p.cpuSystemMs : null };
    samples.push(sample);
    while (samples.length > MAX_SAMPLES || (samples.length > 0 && samples[0].t < now - WINDOW_MS)) samples.shift();

    chart('chart-events', now, ['events'], perS, '');
    chart('chart-queries', now, ['queries'], perS, '');
    chart('chart-write-latency', now, ['wp50', 'wp99'], ms, ' ms');
    chart('chart-read-latency', now, ['rp50', 'rp99'], ms, ' ms');
    text(el('load-note'), 'Requests this node coordinated; latency p50/p99 of its last ' + l.windowS + ' s, from reaching the node to its answer. ');
    var e = s.edge;
    text(el('process'), 'Process: ' + mb(p.rssBytes) + ' resident, heap ' + mb(p.heapUsedBytes) + ' of ' + mb(p.heapTotalBytes) + (isNum(p.heapLimitBytes) ? ' (limit ' + mb(p.heapLimitBytes) + ')' : '') +
      (isNum(sample.cpu) ? ', CPU ' + Math.round(sample.cpu) + '% of a core' : '') + (isNum(p.uptimeS) ? ', up ' + p.uptimeS + ' s' : '') +
      (e ? '; ' + e.connections + ' of ' + e.maxConnections + ' connections open.' : '.'));
  }

  function chart(id, now, keys, format, unit) {
    var card = el(id);
    var box = card.querySelector('svg');
    var max = 0;
    samples.forEach(function (x) { keys.forEach(function (k) { if (isNum(x[k]) && x[k] > max) max = x[k]; }); });
    var top = max > 0 ? max * 1.1 : 1;
    var shapes = [svg('line', { x1: 0, y1: 59.5, x2: 300, y2: 59.5, class: 'grid-line' })];
    keys.forEach(function (k, i) {
      var d = '';
      var pen = 'M';
      samples.forEach(function (x) {
        if (!isNum(x[k])) { pen = 'M'; return; }
        var px = 300 - (now - x.t) / WINDOW_MS * 300;
        var py = 58 - x[k] / top * 56;
        d += pen + px.toFixed(1) + ' ' + py.toFixed(1) + ' ';
        pen = 'L';
      });
      if (d !== '') shapes.push(svg('path', { d: d, class: i === 0 ? 'a' : 'b' }));
    });
    box.replaceChildren.apply(box, shapes);
    var latest = samples.length > 0 ? samples[samples.length - 1] : {};
    text(card.querySelector('.now'), keys.map(function (k) { return format(latest[k]); }).join(' / ') + unit);
    text(card.querySelector('.max'), max > 0 ? 'max ' + format(max) + unit : '');
  }

  poll();
})();
`;

const HTML =
  '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<meta name="viewport" content="width=device-width, initial-scale=1">\n' +
  '<title>Tally status</title>\n<link rel="icon" href="data:,">\n' +
  `<style>${STYLE}</style>\n</head>\n<body>${BODY}<script>${SCRIPT}</script>\n</body>\n</html>\n`;

const sha256 = (s: string): string => `'sha256-${createHash('sha256').update(s, 'utf8').digest('base64')}'`;

export interface StatusPage {
  html: string;
  /** Allows the page's own script and style (by hash) and requests to its own origin, nothing else. */
  contentSecurityPolicy: string;
}

const PAGE: StatusPage = {
  html: HTML,
  contentSecurityPolicy: [
    "default-src 'none'",
    `script-src ${sha256(SCRIPT)}`,
    `style-src ${sha256(STYLE)}`,
    "connect-src 'self'",
    'img-src data:',
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; '),
};

/** The status page served at `/`: the same document every time. */
export function statusPage(): StatusPage {
  return PAGE;
}
