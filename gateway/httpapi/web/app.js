// Runnel dashboard: vanilla JS, no build step, no dependencies. It reads
// the gateway's JSON API (/api/v1/...) and the live stream of closed
// windows; it keeps no state on the server. The stream is read with fetch()
// rather than EventSource so it can carry the Authorization header when the
// gateway requires a token.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = 'runnel.token';
  const STATUS_EVERY_MS = 2000;
  const LOGS_EVERY_MS = 5000;
  const SERIES_EVERY_MS = 10000;
  const ALERTS_EVERY_MS = 5000;
  const PAGE = 50;
  const MAX_POINTS = 240;
  const MAX_SSE_BUFFER = 1 << 20; // a stream that never separates events is cut off

  // ---------- token and requests ----------
  let token = '';
  try { token = localStorage.getItem(TOKEN_KEY) || ''; } catch (e) { /* storage disabled */ }
  const tokenListeners = [];

  class HTTPError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function request(path, signal, accept) {
    const headers = { Accept: accept || 'application/json' };
    if (token) headers.Authorization = 'Bearer ' + token;
    const res = await fetch(path, { headers, signal, cache: 'no-store' });
    if (res.status === 401) {
      askToken(token ? 'The token was not accepted.' : '');
      throw new HTTPError(401, 'unauthorized');
    }
    if (!res.ok) {
      let msg = res.status + ' ' + res.statusText;
      try { msg = (await res.json()).error || msg; } catch (e) { /* not JSON */ }
      throw new HTTPError(res.status, msg);
    }
    return res;
  }
  const getJSON = async (path, signal) => (await request(path, signal)).json();

  function askToken(why) {
    const dlg = $('token-dialog');
    $('token-error').textContent = why;
    if (!dlg.open) {
      if (typeof dlg.showModal === 'function') dlg.showModal(); else dlg.setAttribute('open', '');
      $('token').focus();
    }
  }
  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = $('token').value.trim();
    if (!v) return;
    token = v;
    try { localStorage.setItem(TOKEN_KEY, v); } catch (e) { /* kept for this page only */ }
    $('token').value = '';
    $('token-dialog').close();
    tokenListeners.forEach((f) => f());
  });
  $('token-cancel').addEventListener('click', () => $('token-dialog').close());

  // ---------- formatting ----------
  const nf = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const fmtInt = (n) => (n == null || !isFinite(n) ? '–' : nf.format(n));
  function fmtRate(r) {
    if (r == null || !isFinite(r)) return '–';
    if (r < 10) return r.toFixed(1);
    return nf.format(Math.round(r));
  }
  function fmtNum(v) {
    if (v == null || !isFinite(v)) return '–';
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
    return String(Number(v.toPrecision(4)));
  }
  function fmtBytes(b) {
    if (b == null || b < 0) return '–';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
    return (i === 0 ? b : b.toFixed(1)) + ' ' + u[i];
  }
  function fmtDuration(s) {
    if (s == null || s < 0) return '–';
    s = Math.floor(s);
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60, sec = s % 60;
    if (d) return d + 'd ' + h + 'h ' + m + 'm';
    if (h) return h + 'h ' + m + 'm ' + sec + 's';
    if (m) return m + 'm ' + sec + 's';
    return sec + 's';
  }
  const fmtTime = (ns) => new Date(ns / 1e6).toLocaleTimeString(undefined, { hour12: false });
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v; else if (k.startsWith('data-') || k.startsWith('aria-')) e.setAttribute(k, v); else e[k] = v;
    }
    for (const k of kids) if (k != null) e.append(k);
    return e;
  }
  const setText = (id, t) => { $(id).textContent = t; };

  // every runs f now and then every ms (skipping while the page is hidden,
  // and never overlapping itself); a token change runs it again at once.
  function every(ms, f) {
    let busy = false;
    const tick = async () => {
      if (busy || document.hidden) return;
      busy = true;
      try { await f(); } catch (e) { /* each f shows its own errors */ } finally { busy = false; }
    };
    tick();
    setInterval(tick, ms);
    tokenListeners.push(tick);
    document.addEventListener('visibilitychange', () => { if (!document.hidden) tick(); });
  }

  // ---------- health and rates ----------
  let prev = null;
  async function pollStatus() {
    let st;
    try {
      st = await getJSON('/api/v1/status');
    } catch (e) {
      const badge = $('health');
      badge.dataset.state = 'down';
      badge.textContent = e.status === 401 ? 'token required' : 'unreachable: ' + e.message;
      prev = null;
      return;
    }
    const badge = $('health');
    badge.dataset.state = st.ready ? 'ready' : 'not-ready';
    badge.textContent = st.ready ? 'ready' : 'not ready: ' + (st.reason || 'unknown');
    const r = $('ready');
    r.dataset.ready = String(st.ready);
    r.textContent = st.ready ? 'ready' : 'not ready';
    setText('reason', st.reason || '–');
    setText('uptime', fmtDuration(st.uptime_seconds));
    setText('gw-id', st.gateway_id);
    setText('title-id', st.gateway_id);
    setText('version', st.version);
    document.title = 'Runnel ' + st.gateway_id;
    const ing = st.ingest;
    setText('readings-total', fmtInt(ing.readings.total) + ' (mqtt ' + fmtInt(ing.readings.mqtt) + ', udp ' +
      fmtInt(ing.readings.udp) + ', http ' + fmtInt(ing.readings.http) + ')');
    const w = st.windows;
    setText('series-total', fmtInt(w.series) + ' (' + fmtInt(w.pairs) + ' fields, ' + fmtInt(w.devices) + ' devices)');
    const pct = w.budget_bytes > 0 ? (100 * w.memory_bytes / w.budget_bytes).toFixed(1) + ' %' : '–';
    setText('memory', pct + ' of ' + fmtBytes(w.budget_bytes));
    setText('overflow', fmtInt(w.overflow_readings) + ' readings, ~' + fmtInt(w.overflow_series) + ' series');
    setText('wal-disk', fmtBytes(st.wal.disk_bytes) + ' in ' + fmtInt(st.wal.segments) + ' segments' +
      (st.wal.lag_records > 0 ? ', windows ' + fmtInt(st.wal.lag_records) + ' records behind' : ''));
    setText('checkpoint', st.checkpoint.age_seconds < 0 ? 'none yet' : fmtDuration(st.checkpoint.age_seconds) + ' ago');
    setText('mqtt-clients', fmtInt(ing.mqtt_clients));
    setText('rejects-total', fmtInt(ing.rejected.total) + ' (' + fmtInt(ing.dead_letters) + ' payloads kept), ' +
      fmtInt(ing.dropped.total) + ' readings dropped');
    setText('late-total', fmtInt(ing.late));
    if (prev && st.time_ns > prev.time_ns) {
      const dt = (st.time_ns - prev.time_ns) / 1e9;
      const rate = (a, b) => Math.max(0, a - b) / dt;
      setText('rate-readings', fmtRate(rate(ing.readings.total, prev.ingest.readings.total)));
      setText('rate-rejects', fmtRate(rate(ing.rejected.total, prev.ingest.rejected.total)));
      setText('rate-late', fmtRate(rate(ing.late, prev.ingest.late)));
    }
    prev = st;
  }

  // ---------- rejects and late readings ----------
  function rejectItem(r, late) {
    const when = fmtTime(r.time_ns);
    if (late) {
      return el('li', {}, el('span', { class: 'tag' }, r.source + ' ' + r.topic), ' ', when, ': ', r.error);
    }
    return el('li', {}, el('span', { class: 'tag' }, r.listener + ' · ' + r.reason), ' ', when, ' ',
      r.topic ? r.topic + ' ' : '', 'from ' + r.source + ': ', r.error);
  }
  async function pollLog(path, listId, late) {
    const list = $(listId);
    try {
      const body = await getJSON(path);
      const items = body.rejects.map((r) => rejectItem(r, late));
      list.replaceChildren(...(items.length ? items : [el('li', { class: 'muted' }, 'none')]));
    } catch (e) {
      list.replaceChildren(el('li', { class: 'muted' }, e.status === 404 ? 'not available' : 'error: ' + e.message));
    }
  }

  // ---------- alerts ----------
  async function pollAlerts() {
    let body;
    try {
      body = await getJSON('/api/v1/alerts');
    } catch (e) {
      $('alerts-summary').textContent = e.status === 404 ? 'alerts: not configured' : 'alerts: ' + e.message;
      $('alerts-list').replaceChildren();
      $('alerts-recent').replaceChildren();
      $('h-alerts-recent').hidden = true;
      return;
    }
    const active = body.active || [], recent = body.recent || [];
    $('alerts-summary').textContent = active.length ? active.length + ' active' : 'no active alerts';
    // An active alert has a state (pending, firing) held since a time; an
    // event has a type (firing, resolved) and happened at one.
    const item = (a, kind, word, when) => el('li', { ['data-' + kind]: a[kind] },
      el('span', { class: 'sev-' + a.severity }, a.severity || ''), ' ',
      el('span', { class: 'tag' }, a.rule), ' ', el('span', { class: 'state-' + a[kind] }, word), when, ' · ',
      a.series + ' ' + a.field + ' = ' + fmtNum(a.value) + ' (threshold ' + fmtNum(a.threshold) + ')');
    const activeItem = (a) => {
      const since = a.since_ns || a.start_ns;
      return item(a, 'state', a.state, since ? ' since ' + fmtTime(since) : '');
    };
    const eventItem = (ev) => {
      const resolved = ev.type === 'resolved';
      const li = item(ev, 'type', resolved ? 'resolved' : 'fired', ev.at_ns ? ' at ' + fmtTime(ev.at_ns) : '');
      if (resolved && ev.start_ns) li.append(' · began ' + fmtTime(ev.start_ns));
      return li;
    };
    $('alerts-list').replaceChildren(...active.map(activeItem));
    $('alerts-recent').replaceChildren(...recent.slice(0, 5).map(eventItem));
    $('h-alerts-recent').hidden = recent.length === 0;
  }

  // ---------- series list ----------
  const list = { q: '', mode: 'prefix', offset: 0, total: 0 };
  const sel = { series: '', fields: [], field: '', spec: '' };
  async function loadSeries() {
    const p = new URLSearchParams({ limit: String(PAGE), offset: String(list.offset) });
    if (list.q) p.set(list.mode, list.q);
    let body;
    try {
      body = await getJSON('/api/v1/series?' + p);
    } catch (e) {
      setText('series-count', 'series: ' + e.message);
      return;
    }
    const lastPage = Math.max(0, Math.floor((body.total - 1) / PAGE) * PAGE);
    if (body.series.length === 0 && body.total > 0 && list.offset > lastPage) {
      list.offset = lastPage; // the list shrank under us
      return loadSeries();
    }
    list.total = body.total;
    setText('series-count', body.total === 0 ? (list.q ? 'No series match.' : 'No series yet.') :
      fmtInt(body.total) + (body.total === 1 ? ' series' : ' series') + (list.q ? ' match' : ''));
    const items = body.series.map((s) => {
      const b = el('button', { type: 'button', 'data-series': s.series, 'aria-pressed': String(s.series === sel.series) },
        s.series, el('span', { class: 'meta' }, s.fields.join(', ') + ' · ' + fmtInt(s.readings) + ' readings'));
      b.addEventListener('click', () => select(s.series, s.fields, ''));
      return el('li', {}, b);
    });
    $('series-list').replaceChildren(...items);
    const last = Math.min(list.offset + PAGE, body.total);
    setText('page-info', body.total ? (list.offset + 1) + '–' + last + ' of ' + fmtInt(body.total) : '');
    $('page-prev').disabled = list.offset === 0;
    $('page-next').disabled = last >= body.total;
    if (body.total > 0 && !sel.series && !picked) pickBusiest().catch(() => { /* tried again at the next poll */ });
  }

  // pickBusiest shows the series with the most readings (of the first
  // 1000 by key) while none is chosen (no click, no link), so a first
  // visit does not open on an empty chart.
  let picked = false;
  async function pickBusiest() {
    const body = await getJSON('/api/v1/series?limit=1000');
    let best = null;
    for (const s of body.series) if (!best || s.readings > best.readings) best = s;
    if (!best || sel.series || picked) return; // none yet, or chosen meanwhile
    picked = true;
    select(best.series, best.fields, '');
  }
  let searchTimer = 0;
  function onSearch() {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      list.q = $('q').value.trim();
      list.mode = $('q-mode').value;
      list.offset = 0;
      loadSeries();
    }, 250);
  }
  $('q').addEventListener('input', onSearch);
  $('q-mode').addEventListener('change', onSearch);
  $('series-search').addEventListener('submit', (ev) => { ev.preventDefault(); onSearch(); });
  $('page-prev').addEventListener('click', () => { list.offset = Math.max(0, list.offset - PAGE); loadSeries(); });
  $('page-next').addEventListener('click', () => { list.offset += PAGE; loadSeries(); });

  // ---------- selection, windows and the live stream ----------
  let points = []; // {t: end_ns, mean, p99}, by t
  let specs = [];  // tumbling specs seen for the selection, smallest first
  let streamAbort = null;

  const specSeconds = (spec) => {
    const m = /^tumbling:(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(spec);
    if (!m) return Infinity;
    return Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2]];
  };

  function saveHash() {
    const p = new URLSearchParams();
    if (sel.series) p.set('series', sel.series);
    if (sel.field) p.set('field', sel.field);
    if (sel.spec) p.set('spec', sel.spec);
    history.replaceState(null, '', '#' + p);
  }

  function select(series, fields, field) {
    sel.series = series;
    sel.fields = fields && fields.length ? fields : (field ? [field] : []);
    sel.field = sel.fields.includes(field) ? field : (sel.fields.includes(sel.field) ? sel.field : sel.fields[0] || '');
    for (const b of $('series-list').querySelectorAll('button[data-series]')) {
      b.setAttribute('aria-pressed', String(b.dataset.series === series));
    }
    setText('sel-series', series);
    const f = $('field');
    f.replaceChildren(...sel.fields.map((x) => el('option', { value: x, selected: x === sel.field }, x)));
    f.disabled = sel.fields.length < 2;
    startWindows();
  }
  $('field').addEventListener('change', () => { sel.field = $('field').value; startWindows(); });
  $('size').addEventListener('change', () => { sel.spec = $('size').value; startWindows(); });

  function fillSizes() {
    const s = $('size');
    s.replaceChildren(...specs.map((x) => el('option', { value: x, selected: x === sel.spec }, x.replace('tumbling:', ''))));
    s.disabled = specs.length < 2;
  }
  function noteSpec(spec) {
    if (!spec.startsWith('tumbling:') || specs.includes(spec)) return;
    specs.push(spec);
    specs.sort((a, b) => specSeconds(a) - specSeconds(b));
    if (!sel.spec) sel.spec = specs[0];
    fillSizes();
  }
  function addPoint(w) {
    if (w.open || w.spec !== sel.spec) return false;
    const p = { t: w.end_ns, mean: w.mean, p99: w.p99 == null ? null : w.p99 };
    const i = points.findIndex((x) => x.t >= p.t);
    if (i >= 0 && points[i].t === p.t) points[i] = p;
    else if (i < 0) points.push(p);
    else points.splice(i, 0, p);
    if (points.length > MAX_POINTS) points.splice(0, points.length - MAX_POINTS);
    return true;
  }

  // startWindows subscribes to the stream for the selection, then fetches
  // the windows already closed; both feed addPoint, which drops duplicates,
  // so no window closing in between is missed.
  async function startWindows() {
    if (streamAbort) streamAbort.abort();
    const ac = new AbortController();
    streamAbort = ac;
    points = [];
    if (!specs.some((s) => s === sel.spec)) specs = [];
    draw();
    if (!sel.series || !sel.field) return;
    saveHash();
    setText('chart-status', 'loading…');
    const series = sel.series, field = sel.field;
    let opened;
    const ready = new Promise((res) => { opened = res; });
    streamLoop(series, field, ac.signal, opened);
    await Promise.race([ready, new Promise((res) => setTimeout(res, 3000))]);
    if (ac.signal.aborted) return;
    try {
      const p = new URLSearchParams({ series, field, kind: 'tumbling', last: '0' });
      const body = await getJSON('/api/v1/windows?' + p, ac.signal);
      for (const w of body.windows) noteSpec(w.spec);
      if (!specs.includes(sel.spec)) sel.spec = specs[0] || '';
      fillSizes();
      for (const w of body.windows) addPoint(w);
      setText('chart-status', specs.length ? '' : 'No windows yet; waiting for the first one to close.');
    } catch (e) {
      if (ac.signal.aborted) return;
      setText('chart-status', e.status === 404 ? 'No windows for this series and field yet.' : 'windows: ' + e.message);
    }
    saveHash();
    draw();
  }

  // streamLoop reads the SSE stream of closed windows with fetch, and
  // reconnects with backoff until aborted.
  async function streamLoop(series, field, signal, opened) {
    let backoff = 1000;
    const url = '/api/v1/stream?' + new URLSearchParams({ prefix: series, field, kind: 'tumbling' });
    while (!signal.aborted) {
      try {
        const res = await request(url, signal, 'text/event-stream');
        opened();
        setText('live', '● live');
        backoff = 1000;
        await readSSE(res.body, signal, (name, data) => {
          if (name !== 'window') return;
          let w;
          try { w = JSON.parse(data); } catch (e) { return; }
          if (w.series !== series || w.field !== field) return; // prefix matched a longer key
          noteSpec(w.spec);
          if (addPoint(w)) { setText('chart-status', ''); draw(); }
        });
      } catch (e) {
        if (signal.aborted) return;
      }
      opened();
      setText('live', 'reconnecting…');
      await new Promise((res) => setTimeout(res, backoff));
      backoff = Math.min(backoff * 2, 30000);
    }
  }

  async function readSSE(body, signal, onEvent) {
    const reader = body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    const stop = () => reader.cancel().catch(() => {});
    signal.addEventListener('abort', stop, { once: true });
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buf += dec.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let name = 'message';
          const data = [];
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;
            const c = line.indexOf(':');
            const k = c < 0 ? line : line.slice(0, c);
            let v = c < 0 ? '' : line.slice(c + 1);
            if (v.startsWith(' ')) v = v.slice(1);
            if (k === 'event') name = v; else if (k === 'data') data.push(v);
          }
          if (data.length) onEvent(name, data.join('\n'));
        }
        if (buf.length > MAX_SSE_BUFFER) throw new Error('stream event too large');
      }
    } finally {
      signal.removeEventListener('abort', stop);
    }
  }

  // ---------- chart ----------
  function draw() {
    const c = $('chart');
    const css = getComputedStyle(document.documentElement);
    const color = (v) => css.getPropertyValue(v).trim();
    const dpr = window.devicePixelRatio || 1;
    const W = c.clientWidth, H = c.clientHeight;
    if (c.width !== Math.round(W * dpr) || c.height !== Math.round(H * dpr)) {
      c.width = Math.round(W * dpr);
      c.height = Math.round(H * dpr);
    }
    const g = c.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, W, H);
    g.font = '12px system-ui, sans-serif';
    g.fillStyle = color('--muted');
    c.dataset.points = String(points.length);
    const size = sel.spec ? sel.spec.replace('tumbling:', '') : '';
    if (!points.length) {
      g.textAlign = 'center';
      g.fillText(sel.series ? 'waiting for closed windows…' : 'select a series', W / 2, H / 2);
      c.setAttribute('aria-label', sel.series ? 'No closed windows yet for ' + sel.series + ' ' + sel.field : 'No series selected');
      return;
    }
    const L = 52, R = 10, T = 10, B = 24;
    const pw = Math.max(1, W - L - R), ph = Math.max(1, H - T - B);
    let lo = Infinity, hi = -Infinity;
    for (const p of points) {
      for (const v of [p.mean, p.p99]) if (v != null && isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    }
    if (!(hi > lo)) { lo -= 1; hi += 1; }
    const pad = (hi - lo) * 0.08;
    lo -= pad; hi += pad;
    const t0 = points[0].t, t1 = points[points.length - 1].t;
    const x = (t) => (t1 === t0 ? L + pw / 2 : L + (t - t0) / (t1 - t0) * pw);
    const y = (v) => T + (hi - v) / (hi - lo) * ph;
    g.strokeStyle = color('--grid');
    g.lineWidth = 1;
    g.textAlign = 'right';
    g.textBaseline = 'middle';
    for (let i = 0; i <= 4; i++) {
      const v = lo + (hi - lo) * i / 4, yy = Math.round(y(v)) + 0.5;
      g.beginPath(); g.moveTo(L, yy); g.lineTo(L + pw, yy); g.stroke();
      g.fillText(fmtNum(v), L - 6, yy);
    }
    g.textBaseline = 'alphabetic';
    g.textAlign = 'left';
    g.fillText(fmtTime(t0), L, H - 6);
    if (t1 !== t0) { g.textAlign = 'right'; g.fillText(fmtTime(t1), L + pw, H - 6); }
    const line = (key, col) => {
      g.strokeStyle = col; g.fillStyle = col; g.lineWidth = 2;
      g.beginPath();
      let started = false;
      for (const p of points) {
        if (p[key] == null) { started = false; continue; }
        if (started) g.lineTo(x(p.t), y(p[key])); else { g.moveTo(x(p.t), y(p[key])); started = true; }
      }
      g.stroke();
      if (points.length <= 60) {
        for (const p of points) if (p[key] != null) { g.beginPath(); g.arc(x(p.t), y(p[key]), 2.5, 0, 2 * Math.PI); g.fill(); }
      }
    };
    line('p99', color('--p99'));
    line('mean', color('--mean'));
    const last = points[points.length - 1];
    c.setAttribute('aria-label', sel.series + ' ' + sel.field + ', ' + points.length + ' closed ' + size +
      ' windows; latest mean ' + fmtNum(last.mean) + ', p99 ' + fmtNum(last.p99));
  }
  if (typeof ResizeObserver === 'function') new ResizeObserver(() => draw()).observe($('chart'));
  else window.addEventListener('resize', draw);

  // ---------- start ----------
  tokenListeners.push(() => { if (sel.series) startWindows(); });
  every(STATUS_EVERY_MS, pollStatus);
  every(SERIES_EVERY_MS, loadSeries);
  every(ALERTS_EVERY_MS, pollAlerts);
  every(LOGS_EVERY_MS, () => Promise.all([
    pollLog('/api/v1/rejects?limit=5', 'rejects-list', false),
    pollLog('/api/v1/late?limit=5', 'late-list', true),
  ]));
  const h = new URLSearchParams(location.hash.slice(1));
  if (h.get('series')) {
    sel.spec = h.get('spec') || '';
    select(h.get('series'), [], h.get('field') || '');
    // The series list fills in the other fields of the series when it knows them.
    getJSON('/api/v1/series?' + new URLSearchParams({ prefix: h.get('series'), limit: '1' })).then((b) => {
      const s = b.series.find((x) => x.series === sel.series);
      if (s && s.fields.length > sel.fields.length) {
        sel.fields = s.fields;
        $('field').replaceChildren(...s.fields.map((x) => el('option', { value: x, selected: x === sel.field }, x)));
        $('field').disabled = s.fields.length < 2;
      }
    }).catch(() => {});
  } else {
    draw();
  }
})();
