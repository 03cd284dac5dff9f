// The forwarder's live log viewer: a tail of GET /logs?follow=true read as NDJSON through a
// stream reader, filters kept in the page's URL, and /stats and /alerts polled beside it.
// Plain script, no build step, no dependency: it is embedded in the forwarder binary.
//
// Easy to get wrong: the amount of DOM. A busy pod writes thousands of lines a second, so
// records are parsed as they arrive but drawn in batches (at most every FRAME_MS, further apart
// when drawing is slow), and only the newest MAX_ROWS stay in the page while following; older
// ones come back on demand ("load older") by reading the journal backwards (tail + until).
'use strict';

(function () {
  const MAX_ROWS = 3000; // rows kept while following; the oldest are dropped
  const HISTORY_ROWS = 20000; // rows kept at most once older records were loaded
  const TAIL = 1000; // records of backlog when a view opens
  const OLDER_STEP = 1000; // records per "load older"
  const STATS_EVERY_MS = 2000;
  const FRAME_MS = 100; // new rows are drawn at most this often
  const FILTERS = ['source', 'level', 'category', 'stream', 'since', 'until', 'grep'];
  // Kept from the URL, no input of their own; `selector` asks every pod it finds (each line
  // then names its pod).
  const PASSED = ['container', 'pod', 'namespace', 'selector', 'selector_namespace'];
  const LEVELS = ['DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'];
  // Fields shown in their own column, not again as key=value after the message.
  const SHOWN = new Set(['id', 'source_file', 'collected_at', 'processed_at', 'log_category',
    'log_level', 'timestamp', 'message', 'line', 'line_base64', 'stack_trace', 'kubernetes',
    'logged_at', 'pushed', 'source_pod']);

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const num = new Intl.NumberFormat();
  // The token the reader gave, for this tab only; storage may be off (private modes).
  function stored(key, value) {
    try {
      if (value === undefined) return sessionStorage.getItem(key) || '';
      sessionStorage.setItem(key, value);
    } catch (_) {
      // Kept in memory only.
    }
    return value || '';
  }

  const view = {
    filter: {}, // the URL's filters: name → value
    stream: null, // {ctrl}
    retryMs: 1000,
    retryTimer: 0,
    paused: false,
    buffer: [], // records that arrived while paused
    bufferDropped: 0,
    pending: [], // records waiting for the next frame
    frame: 0, // the animation frame that will draw `pending`
    frameTimer: 0, // or the timer that will ask for that frame
    lastFlush: 0,
    flushCost: 0,
    rows: [], // the row elements in page order, oldest first; each holds its .record
    ids: new Set(), // record ids in the page, so overlapping reads show a record once
    stick: true, // the reader is at the bottom: follow the new rows
    selected: null, // the row whose fields are shown
    olderDone: false,
    bottomCut: false, // newest rows were dropped to make room for older ones
    grepRe: null,
    token: stored('log-viewer-token'),
  };

  // ---- the URL ------------------------------------------------------------------------------

  function readUrl() {
    const q = new URLSearchParams(location.search);
    view.filter = {};
    for (const name of FILTERS.concat(PASSED)) {
      const values = q.getAll(name).filter((v) => v !== '');
      if (values.length) view.filter[name] = values.join(',');
    }
    for (const name of FILTERS) {
      const input = $('f-' + name);
      input.value = view.filter[name] || '';
      if (input.tagName === 'SELECT' && input.value !== (view.filter[name] || '')) {
        input.value = view.filter[name].toUpperCase(); // level=error from a hand-written URL
      }
      input.classList.remove('bad');
    }
    renderChips();
  }

  function writeUrl() {
    const q = new URLSearchParams();
    for (const [name, value] of Object.entries(view.filter)) q.set(name, value);
    const search = q.toString();
    const url = location.pathname + (search ? '?' + search : '') + location.hash;
    if (url !== location.pathname + location.search + location.hash) {
      history.pushState(null, '', url);
    }
  }

  function filterFromInputs() {
    const filter = {};
    for (const name of FILTERS) {
      const value = $('f-' + name).value.trim();
      if (value) filter[name] = name === 'source' ? value.split(/\s*,\s*/).filter(Boolean).join(',') : value;
    }
    for (const name of PASSED) if (view.filter[name]) filter[name] = view.filter[name];
    return filter;
  }

  function applyInputs() {
    const filter = filterFromInputs();
    if (JSON.stringify(filter) === JSON.stringify(view.filter)) return;
    view.filter = filter;
    writeUrl();
    restart();
  }

  function renderChips() {
    const box = $('f-extra');
    box.replaceChildren();
    for (const name of PASSED) {
      if (!view.filter[name]) continue;
      const chip = el('button', 'chip', name + '=' + view.filter[name] + ' ×');
      chip.type = 'button';
      chip.title = 'Remove this filter';
      chip.addEventListener('click', () => {
        delete view.filter[name];
        writeUrl();
        renderChips();
        restart();
      });
      box.append(chip);
    }
  }

  // ---- talking to the API -------------------------------------------------------------------

  function apiUrl(path, extra) {
    const q = new URLSearchParams();
    for (const [name, value] of Object.entries(Object.assign({}, view.filter, extra))) {
      if (value !== undefined && value !== null && value !== '') q.set(name, value);
    }
    const search = q.toString();
    return path + (search ? '?' + search : ''); // relative: works behind a path prefix too
  }

  function headers() {
    const h = { Accept: 'application/json, application/x-ndjson' };
    if (view.token) h.Authorization = 'Bearer ' + view.token;
    return h;
  }

  // An HTTP error as the API words it: {"error": …, "parameter": …, "status": …}.
  class ApiError extends Error {
    constructor(status, message, parameter) {
      super(message);
      this.status = status;
      this.parameter = parameter;
    }
  }

  async function apiError(response) {
    let message = response.status + ' ' + response.statusText;
    let parameter = null;
    try {
      const body = await response.json();
      if (body && body.error) message = body.error;
      parameter = (body && body.parameter) || null;
    } catch (_) {
      // Not the API's JSON (a proxy's page): the status line says enough.
    }
    return new ApiError(response.status, message, parameter);
  }

  async function getJson(path) {
    const response = await fetch(path, { headers: headers(), cache: 'no-store' });
    if (!response.ok) throw await apiError(response);
    return response.json();
  }

  // ---- messages -----------------------------------------------------------------------------

  const banners = new Map(); // kind → message: the stream's error and the stats' error apart

  function showError(kind, message, opts) {
    banners.set(kind, { message, token: opts && opts.token });
    renderBanner();
  }

  function clearError(kind) {
    if (banners.delete(kind)) renderBanner();
  }

  function renderBanner() {
    const box = $('banner');
    const all = [...banners.values()];
    box.hidden = all.length === 0;
    $('banner-text').textContent = [...new Set(all.map((b) => b.message))].join(' · ');
    $('token-form').hidden = !all.some((b) => b.token);
  }

  function explain(error, what) {
    if (error instanceof ApiError) {
      if (error.status === 401 || error.status === 403) {
        return { message: what + ': the query API wants a token (' + error.message + ')', token: true };
      }
      return { message: what + ': ' + error.message, parameter: error.parameter };
    }
    return {
      message: 'Cannot reach the query API at ' + location.host + ' (' + (error.message || error) + ')',
    };
  }

  function setStatus(state, text) {
    const s = $('status');
    s.dataset.state = state;
    s.textContent = text;
  }

  function markBadInput(parameter) {
    for (const name of FILTERS) $('f-' + name).classList.toggle('bad', name === parameter);
  }

  // ---- the live tail ------------------------------------------------------------------------

  function restart() {
    stopStream();
    clearRows();
    view.paused = false;
    view.buffer = [];
    view.bufferDropped = 0;
    view.olderDone = false;
    view.bottomCut = false;
    view.retryMs = 1000;
    view.grepRe = compileGrep(view.filter.grep);
    markBadInput(null);
    clearError('stream');
    $('log-empty').textContent = 'Reading the journal…';
    renderFollow();
    openStream({ tail: TAIL, follow: 'true' });
  }

  function stopStream() {
    clearTimeout(view.retryTimer);
    if (view.stream) view.stream.ctrl.abort();
    view.stream = null;
  }

  async function openStream(params) {
    const ctrl = new AbortController();
    const stream = { ctrl };
    view.stream = stream;
    setStatus('connecting', 'connecting…');
    let response;
    try {
      response = await fetch(apiUrl('logs', params), { headers: headers(), signal: ctrl.signal, cache: 'no-store' });
      if (!response.ok) throw await apiError(response);
    } catch (error) {
      if (ctrl.signal.aborted) return;
      return streamFailed(error);
    }
    clearError('stream');
    view.retryMs = 1000;
    renderFollow();
    emptyMessage(); // the tail was read before the answer started: rows follow at once
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let rest = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const text = rest + decoder.decode(value, { stream: true });
        const end = text.lastIndexOf('\n');
        if (end < 0) {
          rest = text;
          continue;
        }
        rest = text.slice(end + 1);
        received(parseLines(text.slice(0, end)));
        startStats();
      }
    } catch (error) {
      if (ctrl.signal.aborted) return;
      return streamFailed(error);
    }
    if (ctrl.signal.aborted || view.stream !== stream) return;
    if (rest.trim()) received(parseLines(rest));
    view.stream = null;
    if (untilPassed()) {
      setStatus('ended', 'ended: the time range is over');
      emptyMessage();
      renderFollow();
      return;
    }
    // The server closed a follow (restarted, or a proxy timed out): continue where it stopped.
    retry('the stream ended; resuming');
  }

  function streamFailed(error) {
    startStats();
    const { message, parameter, token } = explain(error, 'Logs');
    showError('stream', message, { token });
    if (parameter) markBadInput(parameter);
    if (error instanceof ApiError && error.status !== 429 && error.status < 500) {
      // A bad filter or an unknown source: retrying changes nothing until the filter does.
      setStatus('error', 'refused');
      $('log-empty').textContent = 'No records: ' + message;
      view.stream = null;
      return;
    }
    retry('retrying');
  }

  function retry(why) {
    const wait = view.retryMs;
    view.retryMs = Math.min(view.retryMs * 2, 10000);
    setStatus('offline', why + ' in ' + Math.round(wait / 1000) + ' s');
    view.stream = null;
    view.retryTimer = setTimeout(() => {
      // Continue after the newest record received (its id drops the overlap); a shown record
      // passed the filter's own since, so this never reaches further back than the view.
      const last = newestRecord();
      if (last && last.collected_at) openStream({ since: last.collected_at, follow: 'true' });
      else openStream({ tail: TAIL, follow: 'true' });
    }, wait);
  }

  function untilPassed() {
    const until = view.filter.until;
    if (!until) return false;
    const at = /^\d+\s*[a-z]+$/i.test(until) ? 0 : Date.parse(until);
    return !(at > Date.now());
  }

  function parseLines(text) {
    const out = [];
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        const record = JSON.parse(line);
        out.push(record && typeof record === 'object' ? record : { message: String(record) });
      } catch (_) {
        out.push({ message: line, log_level: 'INFO', unparsed: true });
      }
    }
    return out;
  }

  function received(records) {
    const fresh = [];
    for (const r of records) {
      if (r.id) {
        if (view.ids.has(r.id)) continue; // overlapping reads (a resumed follow, load older)
        view.ids.add(r.id);
      }
      fresh.push(r);
    }
    if (!fresh.length) return;
    if (view.paused) {
      view.buffer.push(...fresh);
      if (view.buffer.length > MAX_ROWS) {
        const dropped = view.buffer.splice(0, view.buffer.length - MAX_ROWS);
        for (const r of dropped) view.ids.delete(r.id);
        view.bufferDropped += dropped.length;
      }
      renderFollow();
      return;
    }
    render(fresh);
  }

  function render(records) {
    view.pending.push(...records);
    if (view.frame || view.frameTimer) return;
    // A lone line shows at once; a flood is drawn at most every FRAME_MS, each time with all
    // that came meanwhile, since each drawing costs a layout of the whole list.
    const wait = view.lastFlush + Math.max(FRAME_MS, 3 * view.flushCost) - performance.now();
    if (wait <= 0) view.frame = requestAnimationFrame(flush);
    else {
      view.frameTimer = setTimeout(() => {
        view.frameTimer = 0;
        view.frame = requestAnimationFrame(flush);
      }, wait);
    }
  }

  // Renders what arrived since the last drawing: one DOM append, whatever the rate.
  function flush() {
    view.frame = 0;
    view.lastFlush = performance.now();
    draw();
    // What a drawing costs (its layout included) spaces the next one: the page stays responsive
    // to the reader under a flood, on a slow machine too.
    view.flushCost = performance.now() - view.lastFlush;
  }

  function draw() {
    let records = view.pending;
    view.pending = [];
    if (records.length > MAX_ROWS) {
      for (const r of records.slice(0, records.length - MAX_ROWS)) view.ids.delete(r.id);
      records = records.slice(records.length - MAX_ROWS);
    }
    if (!records.length) return;
    const log = $('log');
    const fragment = document.createDocumentFragment();
    for (const r of records) {
      const div = row(r);
      view.rows.push(div);
      fragment.append(div);
    }
    log.append(fragment);
    $('log-empty').hidden = true;
    const limit = view.stick ? MAX_ROWS : HISTORY_ROWS;
    if (view.rows.length > limit) {
      removeRows(0, view.rows.length - limit, !view.stick);
      view.olderDone = false;
    }
    if (view.stick) log.scrollTop = log.scrollHeight;
    $('jump').hidden = view.stick;
    renderCount();
  }

  // Removes `count` rows from index `from` in one DOM operation. With keepView, what the
  // reader looks at stays in place when rows above it go.
  function removeRows(from, count, keepView) {
    if (count <= 0) return;
    const gone = view.rows.splice(from, count);
    const log = $('log');
    const before = keepView ? log.scrollHeight : 0;
    const range = document.createRange();
    range.setStartBefore(gone[0]);
    range.setEndAfter(gone[gone.length - 1]);
    range.deleteContents();
    for (const div of gone) {
      if (div.record.id) view.ids.delete(div.record.id);
      if (view.selected === div) closeDetail();
    }
    if (keepView) log.scrollTop -= before - log.scrollHeight;
  }

  function clearRows() {
    cancelAnimationFrame(view.frame);
    clearTimeout(view.frameTimer);
    view.frame = 0;
    view.frameTimer = 0;
    view.pending = [];
    closeDetail();
    removeRows(0, view.rows.length, false);
    view.ids.clear();
    view.stick = true;
    $('log-empty').hidden = false;
    renderCount();
  }

  function atBottom() {
    const log = $('log');
    return log.scrollTop + log.clientHeight >= log.scrollHeight - 40;
  }

  function emptyMessage() {
    if (view.rows.length || view.pending.length) return;
    const e = $('log-empty');
    e.hidden = false;
    e.textContent = view.stream ? 'No records match yet; new ones appear here as they are committed.' : 'No records match.';
  }

  function newestRecord() {
    if (view.buffer.length) return view.buffer[view.buffer.length - 1];
    if (view.pending.length) return view.pending[view.pending.length - 1];
    return view.rows.length ? view.rows[view.rows.length - 1].record : null;
  }

  function oldestRecord() {
    return view.rows.length ? view.rows[0].record : null;
  }

  // ---- one row ------------------------------------------------------------------------------

  function level(r) {
    const l = String(r.log_level || 'INFO').toUpperCase();
    if (l === 'WARN') return 'WARNING';
    if (l === 'FATAL') return 'CRITICAL';
    return l;
  }

  function shortTime(at) {
    // 2026-12-05T12:54:12.650Z → 12:54:12.650 (UTC, like the API)
    const m = /T(\d\d:\d\d:\d\d(?:\.\d+)?)/.exec(at || '');
    return m ? m[1].slice(0, 12) : (at || '');
  }

  function text(r) {
    if (typeof r.message === 'string') return r.message;
    if (typeof r.line === 'string') return r.line;
    if (r.message !== undefined) return JSON.stringify(r.message);
    return '';
  }

  function row(r) {
    const lv = level(r);
    const div = el('div', 'row lv-' + lv.toLowerCase());
    div.record = r;
    const time = el('span', 't', shortTime(r.collected_at));
    time.title = r.collected_at || '';
    const source = r.source_pod ? '[' + r.source_pod + '] ' + (r.source_file || '') : r.source_file || '';
    div.append(time, el('span', 'lv', lv), el('span', 'src', source));
    const msg = el('span', 'msg');
    const t = text(r);
    if (t) appendHighlighted(msg, t);
    else msg.classList.add('bare'); // a JSON record without a message: its fields say it all
    if (r.stack_trace) msg.append(el('span', 'tag', 'trace'));
    if (r.processing_error) msg.append(el('span', 'tag bad', 'unparsed'));
    const extras = [];
    for (const [k, v] of Object.entries(r)) {
      if (SHOWN.has(k) || v === null || typeof v === 'object') continue;
      extras.push(k + '=' + v);
      if (extras.length === 8) break;
    }
    if (extras.length) msg.append(el('span', 'kv', extras.join(' ')));
    div.append(msg);
    return div;
  }

  function compileGrep(pattern) {
    if (!pattern) return null;
    try {
      const re = new RegExp(pattern, 'g');
      return re.test('') ? null : re; // a pattern that matches nothing has nothing to mark
    } catch (_) {
      return null; // Rust regex syntax JavaScript lacks: the server still filters by it
    }
  }

  function appendHighlighted(parent, s) {
    const re = view.grepRe;
    if (!re) {
      parent.append(s);
      return;
    }
    re.lastIndex = 0;
    let at = 0;
    let m;
    while ((m = re.exec(s)) !== null && m[0] !== '') {
      parent.append(s.slice(at, m.index), el('mark', null, m[0]));
      at = m.index + m[0].length;
    }
    parent.append(s.slice(at));
  }

  // ---- pause, resume, older -----------------------------------------------------------------

  function togglePause() {
    if (!view.stream && !view.paused) {
      restart(); // ended or refused: follow again
      return;
    }
    view.paused = !view.paused;
    if (!view.paused) resume();
    renderFollow();
  }

  function resume() {
    if (view.bufferDropped || view.bottomCut) {
      restart(); // lines were left out while paused: start from a fresh tail
      return;
    }
    const buffered = view.buffer;
    view.buffer = [];
    view.stick = true;
    $('log').scrollTop = $('log').scrollHeight;
    render(buffered);
  }

  function renderFollow() {
    const b = $('follow');
    if (view.paused) {
      const n = view.buffer.length + view.bufferDropped;
      b.textContent = 'resume';
      setStatus('paused', 'paused' + (n ? ' · ' + num.format(n) + ' new' : ''));
    } else if (view.stream) {
      b.textContent = 'pause';
      setStatus('live', 'live');
    } else {
      b.textContent = 'follow';
    }
  }

  function renderCount() {
    const n = view.rows.length;
    $('count').textContent = n ? num.format(n) + (n === 1 ? ' line' : ' lines') +
      (n >= MAX_ROWS ? ' (the newest ' + num.format(MAX_ROWS) + ' while following)' : '') : '';
    $('older').disabled = view.olderDone;
  }

  async function loadOlder() {
    const oldest = oldestRecord();
    if (!oldest || !oldest.collected_at) return;
    const button = $('older');
    button.disabled = true;
    button.textContent = 'loading…';
    // Records up to the oldest shown one's time, counting in the ones shown that a tail up to
    // that time includes again (a busy millisecond holds many): those are dropped by id.
    let until = oldest.collected_at;
    let shown = 0;
    for (const div of view.rows) if (div.record.collected_at <= until) shown++;
    try {
      for (let attempt = 0; attempt < 2; attempt++) {
        const tail = OLDER_STEP + shown;
        const response = await fetch(apiUrl('logs', { tail, until }), { headers: headers(), cache: 'no-store' });
        if (!response.ok) throw await apiError(response);
        const records = parseLines(await response.text());
        const fresh = records.filter((r) => !(r.id && view.ids.has(r.id)));
        const more = records.length === tail || response.headers.get('x-logs-truncated');
        if (fresh.length || !more) {
          prepend(fresh);
          view.olderDone = !more;
          break;
        }
        // Nothing new up to that time (records out of time order): step past it.
        until = new Date(Date.parse(until) - 1).toISOString();
        shown = 0;
      }
      clearError('older');
    } catch (error) {
      showError('older', explain(error, 'Older records').message);
    }
    button.textContent = 'load older';
    renderCount();
  }

  function prepend(records) {
    if (!records.length) return;
    if (!view.paused && view.stream) {
      view.paused = true; // reading history: new lines wait instead of pushing it away
      renderFollow();
    }
    const log = $('log');
    const before = log.scrollHeight;
    const fragment = document.createDocumentFragment();
    const added = records.map((r) => {
      if (r.id) view.ids.add(r.id);
      return fragment.appendChild(row(r));
    });
    view.rows[0].before(fragment);
    view.rows.unshift(...added);
    log.scrollTop += log.scrollHeight - before; // the rows the reader looked at stay in place
    view.stick = false;
    if (view.rows.length > HISTORY_ROWS) {
      // Too many rows: drop the newest (a resume then starts over from a fresh tail).
      removeRows(HISTORY_ROWS, view.rows.length - HISTORY_ROWS, false);
      view.bottomCut = true;
    }
  }

  // ---- a record's fields --------------------------------------------------------------------

  function showDetail(div) {
    const r = div.record;
    if (view.selected) view.selected.classList.remove('selected');
    div.classList.add('selected');
    view.selected = div;
    $('detail-title').textContent = (r.source_file || 'record') + ' · ' + level(r);
    const table = $('detail-fields');
    table.replaceChildren();
    const keys = Object.keys(r);
    const first = ['message', 'line', 'log_level', 'source_file', 'timestamp', 'collected_at', 'id'];
    keys.sort((a, b) => {
      const ia = first.indexOf(a);
      const ib = first.indexOf(b);
      return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
    });
    for (const k of keys) {
      const v = r[k];
      const tr = el('tr');
      tr.dataset.field = k;
      const value = el('td');
      if (v !== null && typeof v === 'object') value.append(el('pre', null, JSON.stringify(v, null, 2)));
      else if (typeof v === 'string' && v.includes('\n')) value.append(el('pre', null, v));
      else value.textContent = String(v);
      tr.append(el('th', null, k), value);
      table.append(tr);
    }
    $('detail').hidden = false;
  }

  function closeDetail() {
    $('detail').hidden = true;
    if (view.selected) view.selected.classList.remove('selected');
    view.selected = null;
  }

  // ---- stats, sources, alerts ---------------------------------------------------------------

  let statsTimer = 0;
  let polling = false;
  let statsStarted = false;

  function startStats() {
    if (statsStarted) return;
    statsStarted = true;
    pollStats();
  }

  async function pollStats() {
    clearTimeout(statsTimer);
    if (polling) return;
    polling = true;
    try {
      const [stats, alerts] = await Promise.all([getJson('stats'), getJson('alerts')]);
      renderStats(stats);
      renderAlerts(alerts);
      clearError('stats');
    } catch (error) {
      const { message, token } = explain(error, 'Stats');
      showError('stats', message, { token });
    }
    polling = false;
    if (!document.hidden) statsTimer = setTimeout(pollStats, STATS_EVERY_MS);
  }

  function rate(x) {
    return x >= 10 ? x.toFixed(0) : x >= 0.05 ? x.toFixed(1) : x > 0 ? '<0.1' : '0';
  }

  function renderStats(stats) {
    const sources = stats.sources || [];
    $('totals').textContent = num.format(stats.records || 0) + ' records · ' + rate(stats.rate_per_s || 0) + '/s';
    $('stats-since').textContent = stats.since ? 'since ' + shortTime(stats.since) : '';
    $('stats-since').title = stats.since ? 'counted since ' + stats.since + ' (the oldest retained record)' : '';
    const chosen = new Set((view.filter.source || '').split(',').filter(Boolean));
    const body = $('sources').tBodies[0];
    body.replaceChildren();
    for (const s of sources) {
      const tr = el('tr');
      tr.dataset.source = s.name;
      tr.classList.toggle('chosen', chosen.has(s.name));
      const levels = LEVELS.map((l) => l + ' ' + num.format((s.levels || {})[l] || 0)).join(', ');
      tr.title = s.name + ' (' + (s.category || 'no category') + ')\n' + levels +
        '\nfirst ' + (s.first_at || '-') + '\nlast ' + (s.last_at || '-') + '\n' + num.format(s.bytes || 0) + ' bytes' +
        '\nclick: show only this source (again: all)';
      const name = el('td', 'name');
      name.append(el('span', null, s.name), bar(s.levels || {}, s.records || 0));
      tr.append(name, el('td', 'n', num.format(s.records || 0)), el('td', 'n', rate(s.rate_per_s || 0)),
        el('td', 'n' + (s.errors ? ' err' : ''), num.format(s.errors || 0)));
      body.append(tr);
    }
    $('sources-empty').hidden = sources.length > 0;
    $('sources-empty').textContent = 'No records in the journal yet.';
    const levels = $('levels');
    levels.replaceChildren(bar(stats.levels || {}, stats.records || 0));
    for (const l of LEVELS) {
      const count = (stats.levels || {})[l] || 0;
      if (count) levels.append(el('span', 'lv-count lv-' + l.toLowerCase(), l + ' ' + num.format(count)));
    }
    fillList('source-list', sources.map((s) => s.name));
    fillList('category-list', Object.keys(stats.categories || {}));
    const f = stats.forwarder || {};
    const lag = typeof f.lag_bytes === 'number' ? f.lag_bytes : null;
    const sinks = f.sinks && typeof f.sinks === 'object' ? Object.keys(f.sinks) : [];
    $('pipeline').textContent = (lag === null ? 'lag unknown' : 'lag ' + bytes(lag) + ' behind the processor') +
      (sinks.length ? ' · sinks: ' + sinks.join(', ') : '');
  }

  function bar(counts, total) {
    const b = el('span', 'bar');
    for (const l of LEVELS) {
      const c = counts[l] || 0;
      if (!c || !total) continue;
      const part = el('span', 'lv-' + l.toLowerCase());
      part.style.width = Math.max(1, (100 * c) / total) + '%'; // CSSOM: allowed by the CSP
      b.append(part);
    }
    return b;
  }

  function bytes(n) {
    if (n < 1024) return n + ' B';
    if (n < 1 << 20) return (n / 1024).toFixed(1) + ' KiB';
    return (n / (1 << 20)).toFixed(1) + ' MiB';
  }

  function fillList(id, names) {
    const list = $(id);
    if (list.dataset.names === names.join('\n')) return;
    list.dataset.names = names.join('\n');
    list.replaceChildren(...names.map((n) => {
      const o = el('option');
      o.value = n;
      return o;
    }));
  }

  function renderAlerts(alerts) {
    const firing = (alerts && alerts.firing) || [];
    const box = $('alerts');
    box.hidden = firing.length === 0;
    $('alerts-badge').hidden = firing.length === 0;
    $('alerts-badge').textContent = firing.length + (firing.length === 1 ? ' alert firing' : ' alerts firing');
    box.replaceChildren();
    for (const a of firing) {
      const labels = a.labels || {};
      const notes = a.annotations || {};
      const item = el('div', 'alert sev-' + String(labels.severity || 'warning').toLowerCase());
      item.append(el('strong', null, labels.alertname || 'alert'));
      const summary = notes.summary || notes.description || '';
      if (summary) item.append(el('span', null, summary));
      item.append(el('span', 'muted', 'since ' + shortTime(a.startsAt)));
      const extra = Object.entries(labels).filter(([k]) => k !== 'alertname').map(([k, v]) => k + '=' + v).join(' ');
      if (extra) item.append(el('span', 'kv', extra));
      box.append(item);
    }
  }

  // ---- wiring -------------------------------------------------------------------------------

  function toggleSource(name) {
    const chosen = (view.filter.source || '').split(',').filter(Boolean);
    const only = chosen.length === 1 && chosen[0] === name;
    $('f-source').value = only ? '' : name;
    applyInputs();
    for (const tr of $('sources').tBodies[0].rows) {
      tr.classList.toggle('chosen', !only && tr.dataset.source === name);
    }
  }

  function init() {
    readUrl();
    let typing = 0;
    for (const name of FILTERS) {
      const input = $('f-' + name);
      input.addEventListener('change', applyInputs);
      if (input.tagName === 'INPUT') {
        input.addEventListener('keydown', (e) => {
          if (e.key === 'Enter') {
            e.preventDefault();
            applyInputs();
          }
        });
        if (name === 'grep') {
          input.addEventListener('input', () => {
            clearTimeout(typing);
            typing = setTimeout(applyInputs, 500);
          });
        }
      }
    }
    $('filters').addEventListener('submit', (e) => e.preventDefault());
    $('f-clear').addEventListener('click', () => {
      for (const name of FILTERS) $('f-' + name).value = '';
      for (const name of PASSED) delete view.filter[name];
      renderChips();
      applyInputs();
    });
    $('follow').addEventListener('click', togglePause);
    $('older').addEventListener('click', loadOlder);
    $('wrap').addEventListener('change', (e) => $('log').classList.toggle('wrap', e.target.checked));
    $('jump').addEventListener('click', () => {
      if (view.paused) togglePause();
      view.stick = true;
      $('log').scrollTop = $('log').scrollHeight;
      $('jump').hidden = true;
    });
    $('log').addEventListener('scroll', () => {
      view.stick = atBottom();
      if (view.stick) $('jump').hidden = true;
    });
    $('log').addEventListener('click', (e) => {
      const r = e.target.closest('.row');
      if (!r) return;
      if (view.selected === r) closeDetail();
      else showDetail(r);
    });
    $('detail-close').addEventListener('click', closeDetail);
    $('detail-copy').addEventListener('click', () => {
      const r = view.selected && view.selected.record;
      if (r && navigator.clipboard) navigator.clipboard.writeText(JSON.stringify(r, null, 2)).catch(() => {});
    });
    $('sources').addEventListener('click', (e) => {
      const tr = e.target.closest('tr[data-source]');
      if (tr) toggleSource(tr.dataset.source);
    });
    $('banner-close').addEventListener('click', () => {
      banners.clear();
      renderBanner();
    });
    $('token-use').addEventListener('click', () => {
      view.token = $('token').value.trim();
      stored('log-viewer-token', view.token);
      banners.clear();
      renderBanner();
      restart();
      pollStats();
    });
    document.addEventListener('keydown', (e) => {
      if (e.target.closest('input, select, textarea, button')) return;
      if (e.key === 'Escape') closeDetail();
      else if (e.key === ' ') {
        e.preventDefault();
        togglePause();
      }
    });
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden && statsStarted) pollStats();
    });
    window.addEventListener('popstate', () => {
      readUrl();
      restart();
    });
    restart();
    // The first paint waits for nothing: the tail goes first, the counts (whose first answer
    // reads the whole retained journal once) once the tail is in, or after a second and a half.
    statsTimer = setTimeout(startStats, 1500);
  }

  init();
})();
