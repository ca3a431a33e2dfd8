// switchboard operator dashboard. Plain ES module: no framework, no build step,
// nothing fetched from elsewhere. Everything the API returns (names, labels,
// upstream errors) is operator- or upstream-controlled, so it only ever enters
// the page as text (textContent, DOM APIs), never as HTML.

const TOKEN_KEY = 'switchboard.adminToken';  // sessionStorage only
const PREFS_KEY = 'switchboard.prefs';       // localStorage: window, auto-refresh
const REFRESH_MS = 5000;
const TOAST_MS = 4000;
const PALETTE = ['#2563eb', '#16a34a', '#d97706', '#9333ea', '#0891b2', '#dc2626',
                 '#65a30d', '#db2777', '#4f46e5', '#0d9488', '#ca8a04', '#7c3aed'];

const state = {
  token: null,
  session: 0,          // bumped on sign-in/out; late responses of an old session are dropped
  backends: [],
  pools: [],
  keys: [],            // client keys as listed (never the keys themselves)
  editing: null,       // the backend being edited, null when creating
  refreshing: false,
  refreshAgain: false, // a refresh was asked for while one ran
  timer: null,
  charts: {},
  colors: new Map(),   // backend name -> colour, stable for the session
  usage: new Map(),    // usage record key -> record, for opening a trace
  expanded: new Set(), // usage record keys whose trace is open
};

const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

// --- DOM helpers ---------------------------------------------------------------

// el('td', {class: 'x', text: name, dataset: {id}}, child, 'text'...). Strings
// become text nodes; nothing is parsed as HTML.
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = String(value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

// A table cell; data-label names the column when tables collapse to cards
// (where a cell is a two-column grid, so its content is kept in one box).
function cell(label, ...children) {
  const content = children.length > 1 ? [el('div', {}, ...children)] : children;
  return el('td', {'data-label': label}, ...content);
}

function setText(selector, text) {
  const node = $(selector);
  node.textContent = text;
  node.hidden = !text;
}

// Keeps `container`'s keyed children (data-key) in step with `items` without
// rebuilding what did not change: unchanged nodes stay put (no flicker, focus
// and open traces survive a refresh), changed ones are re-rendered.
const signatures = new WeakMap();
function reconcile(container, items, keyOf, render) {
  const keyed = () => $$(':scope > [data-key]', container);
  const current = new Map(keyed().map((n) => [n.dataset.key, n]));
  const next = items.map((item) => {
    const key = String(keyOf(item));
    const sig = JSON.stringify(item);
    const prev = current.get(key);
    if (prev && signatures.get(prev) === sig) return prev;
    const node = render(item);
    node.dataset.key = key;
    signatures.set(node, sig);
    return node;
  });
  const keep = new Set(next);
  for (const node of current.values()) if (!keep.has(node)) node.remove();
  let cursor = keyed()[0] ?? null;
  for (const node of next) {
    if (node === cursor) {
      cursor = nextKeyed(cursor);
    } else {
      container.insertBefore(node, cursor);
    }
  }
}

function nextKeyed(node) {
  let n = node.nextElementSibling;
  while (n && n.dataset.key === undefined) n = n.nextElementSibling;
  return n;
}

function toast(message, kind = 'info') {
  const node = el('div', {class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status'},
                  message);
  $('#toasts').append(node);
  setTimeout(() => node.remove(), TOAST_MS);
}

// --- Formatting ----------------------------------------------------------------

const numberFormat = new Intl.NumberFormat();
const fmtInt = (n) => (Number.isFinite(n) ? numberFormat.format(n) : '–');
const fmtLimit = (n) => (n > 0 ? fmtInt(n) : '∞');

function fmtMs(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '–';
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function fmtTime(iso) {
  if (!iso) return '–';
  const d = new Date(iso);
  const sameDay = d.toDateString() === new Date().toDateString();
  const time = d.toLocaleTimeString([], {hour12: false});
  return sameDay ? time : `${d.toLocaleDateString([], {month: 'short', day: 'numeric'})} ${time}`;
}

function fmtDuration(totalSeconds) {
  const s = Math.max(0, Math.round(totalSeconds));
  const pad = (n) => String(n).padStart(2, '0');
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
}

function colorFor(name) {
  if (!state.colors.has(name)) {
    state.colors.set(name, PALETTE[state.colors.size % PALETTE.length]);
  }
  return state.colors.get(name);
}

// --- API -----------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body, fallback) {
    const error = (body && typeof body.error === 'object' && body.error) || {};
    super(error.message || fallback || `HTTP ${status}`);
    this.status = status;
    this.param = error.param || null;
    this.code = error.code || null;
  }
}

// Calls the admin API with the token. Resolves to the parsed body (null for
// 204); rejects with ApiError. A 401 also signs out (unless a newer session
// has begun since the call).
async function api(method, path, body) {
  const session = state.session;
  const headers = {Authorization: `Bearer ${state.token}`, Accept: 'application/json'};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {method, headers, cache: 'no-store', credentials: 'omit',
                             body: body === undefined ? undefined : JSON.stringify(body)});
  } catch (err) {
    throw new ApiError(0, null, `Cannot reach the server (${err.message})`);
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // a non-JSON body (proxy error page); reported by status below
  }
  if (res.status === 401 && session === state.session) {
    signOut('The admin token was not accepted. Sign in again.');
  }
  if (!res.ok) throw new ApiError(res.status, data, `${res.status} ${res.statusText}`);
  return data;
}

const backendPath = (b, suffix = '') => `/admin/backends/${encodeURIComponent(b.id)}${suffix}`;

// Fetches `path` and renders it, unless the session changed meanwhile.
async function load(path, render) {
  const session = state.session;
  const data = await api('GET', path);
  if (session === state.session) render(data);
}

// --- Sign-in -------------------------------------------------------------------

function showView(signedIn) {
  $('#signin-view').hidden = signedIn;
  $('#dashboard-view').hidden = !signedIn;
}

async function signIn(event) {
  event.preventDefault();
  const input = $('#token');
  const token = input.value.trim();
  if (!token) {
    setText('#signin-error', 'Enter the admin token.');
    return;
  }
  $('#sign-in').disabled = true;
  state.token = token;
  state.session += 1;
  try {
    await api('GET', '/admin/pools');  // checks the token
    sessionStorage.setItem(TOKEN_KEY, token);
    input.value = '';
    setText('#signin-error', '');
    startDashboard();
  } catch (err) {
    if (err.status !== 401) {
      state.token = null;
      setText('#signin-error', err.message);
    }
  } finally {
    $('#sign-in').disabled = false;
  }
}

function startDashboard() {
  showView(true);
  restartTimer();
  refreshAll();
}

function signOut(message = '') {
  state.token = null;
  state.session += 1;
  sessionStorage.removeItem(TOKEN_KEY);
  clearInterval(state.timer);
  state.timer = null;
  const dialog = $('#backend-dialog');
  if (dialog.open) dialog.close();
  clearDashboard();
  showView(false);
  setText('#signin-error', message);
  $('#token').focus();
}

// Nothing from the old session stays in the page.
function clearDashboard() {
  for (const container of [$('#backends-table tbody'), $('#usage-table'), $('#cooldowns-table tbody'),
                           $('#keys-table tbody'), $('#pools')]) {
    reconcile(container, [], () => '', () => null);
  }
  for (const chart of Object.values(state.charts)) chart.destroy();
  state.charts = {};
  state.backends = [];
  state.keys = [];
  state.usage.clear();
  state.expanded.clear();
  $$('#totals [data-total]').forEach((dd) => { dd.textContent = '–'; });
  $('#last-updated').textContent = '';
  hideCreatedKey();
}

// --- Refresh -------------------------------------------------------------------

const prefs = Object.assign({window: 3600, autoRefresh: true},
                            safeParse(localStorage.getItem(PREFS_KEY)));

function safeParse(text) {
  try {
    return JSON.parse(text) || {};
  } catch {
    return {};
  }
}

function savePrefs() {
  localStorage.setItem(PREFS_KEY, JSON.stringify(prefs));
}

function restartTimer() {
  clearInterval(state.timer);
  state.timer = setInterval(() => {
    if (prefs.autoRefresh && !document.hidden) refreshAll();
  }, REFRESH_MS);
}

const refreshBackends = () => load('/admin/backends', renderBackends);
const refreshPools = () => load('/admin/pools', renderPools);
const refreshStats = () => load(`/admin/stats?window=${prefs.window}`, renderStats);
const refreshUsage = () => load('/admin/usage?limit=50', renderUsage);
const refreshCooldowns = () => load('/admin/cooldowns?limit=20', renderCooldowns);
const refreshKeys = () => load('/admin/keys', renderKeys);

async function refreshAll() {
  if (!state.token) return;
  if (state.refreshing) {
    state.refreshAgain = true;  // after a change, the running refresh may predate it
    return;
  }
  state.refreshing = true;
  state.refreshAgain = false;
  const session = state.session;
  try {
    const results = await Promise.allSettled(
        [refreshBackends(), refreshPools(), refreshStats(), refreshUsage(), refreshCooldowns(),
         refreshKeys()]);
    if (session !== state.session) return;
    const failure = results.find((r) => r.status === 'rejected');
    const status = $('#last-updated');
    status.classList.toggle('stale', Boolean(failure));
    status.textContent = failure ? `Update failed: ${failure.reason.message}`
                                 : `Updated ${new Date().toLocaleTimeString([], {hour12: false})}`;
  } finally {
    state.refreshing = false;
    if (state.refreshAgain) refreshAll();
  }
}

// Refreshes after a change, reporting a failed action.
async function act(button, action, success) {
  button.disabled = true;
  try {
    await action();
    if (success) toast(success, 'success');
  } catch (err) {
    if (err.status !== 401) toast(err.message, 'error');
  } finally {
    button.disabled = false;
  }
  await refreshAll();
}

// --- Countdowns ----------------------------------------------------------------

// A cell counting down to `until` (RFC 3339), ticked every second.
function countdown(until, doneText) {
  const node = el('span', {class: 'countdown', dataset: {done: doneText}});
  if (until) node.dataset.until = until;
  tickCountdown(node, Date.now());
  return node;
}

function tickCountdown(node, now) {
  const left = node.dataset.until ? (Date.parse(node.dataset.until) - now) / 1000 : 0;
  node.textContent = left > 0 ? fmtDuration(Math.ceil(left)) : node.dataset.done;
  node.classList.toggle('active', left > 0);
}

function tickCountdowns() {
  const now = Date.now();
  $$('.countdown[data-until]').forEach((node) => tickCountdown(node, now));
}

// --- Backends ------------------------------------------------------------------

function renderBackends(body) {
  state.backends = body.data;
  reconcile($('#backends-table tbody'), body.data, (b) => b.id, backendRow);
  $('#backends-empty').hidden = body.data.length > 0;
  updatePoolOptions();
}

function badge(text, kind) {
  return el('span', {class: `badge badge-${kind}`, text});
}

function backendRow(b) {
  const limits = [['rpm', b.rpm_limit], ['tpm', b.tpm_limit], ['conc', b.max_concurrency]].map(
      ([name, value]) => el('div', {class: 'nowrap'}, el('span', {class: 'muted', text: `${name} `}),
                            fmtLimit(value)));
  return el('tr', {dataset: {backendName: b.name, backendId: b.id}, 'data-testid': 'backend-row'},
    cell('Name', el('div', {class: 'strong', text: b.name}),
         el('div', {class: 'muted small url', text: b.api_base_url, title: b.api_base_url})),
    cell('Label', b.label || '—'),
    cell('Pool', b.pool),
    cell('API', b.api),
    cell('Status', badge(b.status, b.status)),
    cell('Cooldown', countdown(b.cooldown_until, '—')),
    cell('429s', fmtInt(b.consecutive_429_count)),
    cell('Last error', b.last_error ? el('span', {class: 'error-text', title: b.last_error,
                                                  text: b.last_error}) : '—'),
    cell('Key', el('span', {class: 'nowrap', text: b.api_key_set ? keyHint(b) : 'not set'})),
    cell('Limits', ...limits),
    cell('Actions', el('div', {class: 'actions'},
      actionButton('toggle', b.enabled ? 'Disable' : 'Enable', b),
      actionButton('reset', 'Reset', b, 'Reset the cooldown of'),
      actionButton('edit', 'Edit', b),
      actionButton('delete', 'Delete', b, 'Delete', 'danger'))));
}

// The API's hint already marks the elision ("...f00d"; empty for short keys).
function keyHint(b) {
  const tail = String(b.api_key_hint || '').replace(/^(\.{3}|…)/, '');
  return tail ? `…${tail}` : 'set';
}

function actionButton(action, label, backend, verb = label, kind = '') {
  const description = `${verb} ${backend.name}`;
  return el('button', {type: 'button', class: `small ${kind}`, dataset: {action},
                       'aria-label': description, title: description}, label);
}

const backendActions = {
  toggle: (b, button) => act(button,
      () => api('PATCH', backendPath(b), {enabled: !b.enabled}),
      `${b.name} ${b.enabled ? 'disabled' : 'enabled'}`),
  reset: (b, button) => act(button,
      () => api('POST', backendPath(b, '/cooldown/reset')), `Cooldown of ${b.name} reset`),
  edit: (b) => openForm(b),
  delete: (b, button) => {
    if (!window.confirm(`Delete backend "${b.name}"? This cannot be undone.`)) return;
    act(button, () => api('DELETE', backendPath(b)), `${b.name} deleted`);
  },
};

function onBackendsClick(event) {
  const button = event.target.closest('button[data-action]');
  const row = button?.closest('tr[data-backend-id]');
  const backend = row && state.backends.find((b) => b.id === row.dataset.backendId);
  if (backend) backendActions[button.dataset.action]?.(backend, button);
}

// --- Pools ---------------------------------------------------------------------

function renderPools(body) {
  state.pools = body.data;
  reconcile($('#pools'), body.data, (p) => p.pool, poolCard);
  updatePoolOptions();
}

function poolCard(p) {
  const counts = ['total', 'enabled', 'healthy', 'cooling', 'error'].map((key) =>
      el('div', {class: `count count-${key}`}, el('dt', {text: key}), el('dd', {text: fmtInt(p[key])})));
  const bar = el('div', {class: 'health-bar', 'aria-hidden': 'true'});
  for (const key of ['healthy', 'cooling', 'error']) {
    const segment = el('span', {class: `segment segment-${key}`});
    segment.style.flexGrow = String(p[key]);
    bar.append(segment);
  }
  return el('article', {class: 'card pool-card', dataset: {pool: p.pool}, 'data-testid': 'pool-card'},
    el('header', {}, el('h3', {text: p.pool}), el('span', {class: 'muted', text: `priority ${p.priority}`})),
    bar,
    el('dl', {class: 'pool-counts'}, ...counts));
}

function updatePoolOptions() {
  const names = new Set([...state.pools.map((p) => p.pool), ...state.backends.map((b) => b.pool)]);
  $('#pool-options').replaceChildren(...[...names].sort().map((name) => el('option', {value: name})));
}

// --- Stats and charts ----------------------------------------------------------

// Mirrors the server's StatsBucketSeconds().
const bucketSeconds = (windowSeconds) =>
    (windowSeconds <= 6 * 3600 ? 60 : windowSeconds <= 24 * 3600 ? 300 : 3600);

// The server sends only buckets with traffic; charts want every bucket of the window.
function denseBuckets(stats) {
  const step = bucketSeconds(stats.window) * 1000;
  const byStart = new Map(stats.timeseries.map((b) => [b.start_ms, b]));
  const starts = stats.timeseries.map((b) => b.start_ms);
  const end = Math.max(Math.floor(Date.now() / step) * step, ...starts);
  const first = Math.min(end - (Math.ceil(stats.window * 1000 / step) - 1) * step, ...starts);
  const buckets = [];
  for (let t = first; t <= end; t += step) buckets.push({start: t, data: byStart.get(t) || null});
  return buckets;
}

function bucketLabel(ms, windowSeconds) {
  const d = new Date(ms);
  const time = d.toLocaleTimeString([], {hour: '2-digit', minute: '2-digit', hour12: false});
  return windowSeconds > 24 * 3600 ? `${d.toLocaleDateString([], {weekday: 'short'})} ${time}` : time;
}

function renderStats(stats) {
  renderTotals(stats.totals);
  if (typeof window.Chart === 'undefined') return;  // chart.min.js failed to load
  const buckets = denseBuckets(stats);
  const labels = buckets.map((b) => bucketLabel(b.start, stats.window));
  const series = (get) => buckets.map((b) => (b.data ? get(b.data) : 0));
  const gappy = (get) => buckets.map((b) => (b.data ? get(b.data) : null));
  const names = [...new Set(stats.timeseries.flatMap((b) => Object.keys(b.by_backend)))].sort();

  updateChart('chart-requests', 'bar', true, labels,
      names.map((name) => dataset(name, colorFor(name), series((b) => b.by_backend[name] || 0))));
  updateChart('chart-errors', 'bar', false, labels, [
    dataset('errors', '#dc2626', series((b) => b.errors)),
    // Upstream 429s, failover-absorbed ones included: rate limiting shows
    // even when every client got a 200.
    dataset('upstream 429s', '#d97706', series((b) => b.upstream_429 || 0)),
    dataset('429s to clients', '#92400e', series((b) => b.rate_limited)),
  ]);
  updateChart('chart-latency', 'line', false, labels, [
    dataset('p50', '#2563eb', gappy((b) => b.p50_ms)),
    dataset('p95', '#9333ea', gappy((b) => b.p95_ms)),
  ]);
  updateChart('chart-tokens', 'bar', true, labels, [
    dataset('prompt', '#0891b2', series((b) => b.prompt_tokens)),
    dataset('completion', '#65a30d', series((b) => b.completion_tokens)),
  ]);
}

function renderTotals(t) {
  const tokens = t.prompt_tokens + t.completion_tokens;
  const values = {
    requests: fmtInt(t.requests), errors: fmtInt(t.errors), rate_limited: fmtInt(t.rate_limited),
    upstream_429: fmtInt(t.upstream_429 || 0),
    tokens: fmtInt(tokens), p50_ms: fmtMs(t.p50_ms), p95_ms: fmtMs(t.p95_ms),
  };
  for (const dd of $$('#totals [data-total]')) dd.textContent = values[dd.dataset.total];
  $('#totals [data-total="tokens"]').title =
      `prompt ${fmtInt(t.prompt_tokens)} · completion ${fmtInt(t.completion_tokens)}`;
}

function dataset(label, color, data) {
  return {label, data, backgroundColor: color, borderColor: color, borderWidth: 1.5,
          pointRadius: 0, spanGaps: false, maxBarThickness: 24};
}

// Creates the chart once, then updates it in place (keeping hidden legend
// entries): no redraw flash on refresh.
function updateChart(id, type, stacked, labels, datasets) {
  let chart = state.charts[id];
  if (!chart) {
    chart = new window.Chart(document.getElementById(id), {
      type,
      data: {labels: [], datasets: []},
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        interaction: {mode: 'index', intersect: false},
        plugins: {legend: {position: 'bottom', labels: {boxWidth: 12}}},
        scales: {
          x: {stacked, ticks: {maxRotation: 0, autoSkipPadding: 12}, grid: {display: false}},
          y: {stacked, beginAtZero: true, ticks: {precision: 0}},
        },
      },
    });
    state.charts[id] = chart;
  }
  const previous = new Map(chart.data.datasets.map((d) => [d.label, d]));
  chart.data.labels = labels;
  chart.data.datasets = datasets.map((d) => Object.assign(previous.get(d.label) || {}, d));
  chart.update('none');
}

// --- Recent requests -----------------------------------------------------------

const recordKey = (r) => String(r.id ?? r.request_id);

// Each record is its own <tbody>: the row plus, when open, its trace row.
function renderUsage(body) {
  const keys = new Set(body.data.map(recordKey));
  for (const key of state.expanded) if (!keys.has(key)) state.expanded.delete(key);
  state.usage = new Map(body.data.map((r) => [recordKey(r), r]));
  reconcile($('#usage-table'), body.data, recordKey, usageGroup);
  $('#usage-empty').hidden = body.data.length > 0;
}

function statusKind(status) {
  if (status >= 200 && status < 300) return 'healthy';
  if (status === 429) return 'cooling';
  return 'error';
}

function usageGroup(r) {
  const open = state.expanded.has(recordKey(r));
  const toggle = el('button', {type: 'button', class: 'small', dataset: {action: 'trace'},
                               'aria-expanded': String(open)},
                    traceButtonText(r, open));
  const row = el('tr', {class: 'usage-row', 'data-testid': 'usage-row'},
    cell('Time', el('span', {title: r.time, text: fmtTime(r.time)})),
    cell('Model', r.model || '—'),
    cell('Backend', r.backend_name || '—'),
    cell('Status', badge(String(r.status), statusKind(r.status))),
    cell('Attempts', fmtInt(r.attempts)),
    cell('Latency', fmtMs(r.latency_ms)),
    cell('TTFB', r.ttfb_ms > 0 ? fmtMs(r.ttfb_ms) : '–'),
    cell('Tokens', `${fmtInt(r.prompt_tokens)} / ${fmtInt(r.completion_tokens)}`),
    cell('Trace', toggle));
  const group = el('tbody', {class: 'usage-group'}, row);
  if (open) group.append(traceRow(r));
  return group;
}

function traceButtonText(r, open) {
  return open ? 'Hide' : `Show (${Array.isArray(r.trace) ? r.trace.length : 0})`;
}

// A click anywhere on a request's row opens or closes its trace.
function onUsageClick(event) {
  const row = event.target.closest('tr.usage-row');
  const group = row?.closest('tbody[data-key]');
  const record = group && state.usage.get(group.dataset.key);
  if (!record || window.getSelection().toString()) return;
  const button = $('button[data-action="trace"]', row);
  const key = group.dataset.key;
  const open = !state.expanded.has(key);
  if (open) state.expanded.add(key); else state.expanded.delete(key);
  button.setAttribute('aria-expanded', String(open));
  button.textContent = traceButtonText(record, open);
  if (open) group.append(traceRow(record)); else group.querySelector('.trace-row')?.remove();
}

const DECISIONS = {
  tried: 'tried',
  not_reached: 'not reached',
  skipped_disabled: 'skipped: disabled',
  skipped_cooling: 'skipped: cooling down',
  skipped_error: 'skipped: error state',
  skipped_half_open_busy: 'skipped: half-open trial busy',
  skipped_rate_limited: 'skipped: rate limit',
  no_mapping: 'no mapping for model',
};

// Badge colour of a trace entry: a tried backend by its status; skips by cause.
function decisionKind(entry) {
  if (entry.decision === 'tried') return statusKind(entry.status);
  if (entry.decision === 'skipped_error') return 'error';
  return ['skipped_cooling', 'skipped_rate_limited', 'skipped_half_open_busy'].includes(entry.decision)
      ? 'cooling' : 'disabled';
}

function decisionDetail(entry) {
  const parts = [];
  if (entry.decision === 'tried') {
    parts.push(entry.status ? `HTTP ${entry.status}` : 'no response');
    if (entry.error) parts.push(entry.error.replaceAll('_', ' '));
    if (entry.half_open) parts.push('half-open trial');
  }
  if (entry.limit) parts.push(`${entry.limit} limit`);
  if (entry.until) parts.push(`until ${fmtTime(entry.until)}`);
  return parts.join(' · ');
}

function traceRow(r) {
  const entries = Array.isArray(r.trace) ? r.trace : [];
  const steps = entries.map((entry) => el('li', {class: 'trace-step'},
    el('span', {class: 'strong', text: entry.backend}),
    el('span', {class: 'tag', text: entry.pool}),
    badge(DECISIONS[entry.decision] || entry.decision, decisionKind(entry)),
    el('span', {class: 'muted', text: decisionDetail(entry)})));
  const facts = [['request', r.request_id], ['endpoint', r.endpoint], ['stream', r.stream ? 'yes' : 'no']];
  const details = el('div', {class: 'trace'},
    el('div', {class: 'trace-facts muted small'},
       ...facts.map(([k, v]) => el('span', {text: `${k}: ${v ?? '–'}`}))),
    r.error ? el('p', {class: 'error-text', text: r.error}) : null,
    steps.length ? el('ol', {class: 'trace-steps'}, ...steps)
                 : el('p', {class: 'muted', text: 'No routing decisions recorded.'}));
  return el('tr', {class: 'trace-row', 'data-testid': 'trace-row'},
            el('td', {colspan: '9'}, details));
}

// --- Cooldown events -----------------------------------------------------------

function renderCooldowns(body) {
  reconcile($('#cooldowns-table tbody'), body.data, (e) => e.id, (e) => el('tr', {},
    cell('Backend', el('span', {class: 'strong', text: e.backend})),
    cell('Start', fmtTime(e.start)),
    cell('Until', fmtTime(e.until)),
    cell('Remaining', countdown(e.until, 'ended')),
    cell('Reason', e.reason),
    cell('Upstream status', e.upstream_status ? String(e.upstream_status) : '—')));
  $('#cooldowns-empty').hidden = body.data.length > 0;
}

// --- Client keys ---------------------------------------------------------------

function renderKeys(body) {
  state.keys = body.data;
  reconcile($('#keys-table tbody'), body.data, (k) => k.id, (k) => el('tr',
      {dataset: {keyId: k.id}, 'data-testid': 'key-row'},
    cell('Name', el('span', {class: 'strong', text: k.name})),
    cell('Key', el('span', {class: 'nowrap', text: k.hint ? `sbk_…${k.hint.replace(/^\.{3}/, '')}` : '—'})),
    cell('Created', fmtTime(k.created_at)),
    cell('Last used', k.last_used_at ? fmtTime(k.last_used_at) : 'never'),
    cell('Status', k.revoked ? badge('revoked', 'disabled') : badge('active', 'healthy')),
    cell('Actions', k.revoked ? '' : el('button', {type: 'button', class: 'small danger',
        dataset: {action: 'revoke'}, 'aria-label': `Revoke ${k.name}`, title: `Revoke ${k.name}`},
        'Revoke'))));
  $('#keys-empty').hidden = body.data.length > 0;
}

function hideCreatedKey() {
  $('#key-secret').textContent = '';
  $('#key-created').hidden = true;
}

async function createKey(event) {
  event.preventDefault();
  const input = $('#key-name');
  const button = $('#key-form button[type="submit"]');
  button.disabled = true;
  try {
    const created = await api('POST', '/admin/keys', {name: input.value.trim()});
    $('#key-created-name').textContent = created.name;
    $('#key-secret').textContent = created.key;  // shown this once, kept nowhere
    $('#key-created').hidden = false;
    input.value = '';
    toast(`Client key ${created.name} created`, 'success');
  } catch (err) {
    if (err.status !== 401) toast(err.message, 'error');
  } finally {
    button.disabled = false;
  }
  await refreshAll();
}

function onKeysClick(event) {
  const button = event.target.closest('button[data-action="revoke"]');
  const row = button?.closest('tr[data-key-id]');
  const key = row && state.keys.find((k) => k.id === row.dataset.keyId);
  if (!key) return;
  if (!window.confirm(`Revoke client key "${key.name}"? Requests with it fail at once.`)) return;
  act(button, () => api('DELETE', `/admin/keys/${encodeURIComponent(key.id)}`),
      `${key.name} revoked`);
}

// --- Create / edit form --------------------------------------------------------

const TEXT_FIELDS = ['name', 'label', 'api_base_url', 'api', 'pool'];
const NUMBER_FIELDS = ['timeout_seconds', 'rpm_limit', 'tpm_limit', 'max_concurrency'];
const NEW_BACKEND = {name: '', label: '', api_base_url: '', api: 'openai', pool: 'primary',
                     timeout_seconds: 60, rpm_limit: 0, tpm_limit: 0, max_concurrency: 0,
                     enabled: true, model_mappings: {}};
const MAPPING_PREFIX = 'model_mappings.';
const field = (name) => document.getElementById(`f-${name}`);

function openForm(backend) {
  state.editing = backend || null;
  const b = backend || NEW_BACKEND;
  clearFormErrors();
  for (const name of [...TEXT_FIELDS, ...NUMBER_FIELDS]) field(name).value = b[name] ?? '';
  field('enabled').checked = Boolean(b.enabled);
  const key = field('api_key');
  key.value = '';
  key.placeholder = backend?.api_key_set ? 'leave empty to keep the current key' : '';
  const hint = backend?.api_key_set ? `Key set (${keyHint(backend)}). Enter a new key to rotate it.`
                                    : backend ? 'No key set.' : '';
  setText('#api-key-hint', hint);
  const rows = Object.entries(b.model_mappings || {}).map(([model, m]) => mappingRow(model, m));
  $('#mappings').replaceChildren(...(rows.length ? rows : [mappingRow('', {})]));
  $('#backend-dialog-title').textContent = backend ? `Edit ${backend.name}` : 'New backend';
  $('#backend-dialog').showModal();
  field('name').focus();
}

function mappingRow(model, mapping) {
  const row = $('#mapping-row-template').content.firstElementChild.cloneNode(true);
  $('.m-model', row).value = model;
  $('.m-upstream', row).value = mapping.upstream_model ?? '';
  $('.m-weight', row).value = mapping.weight ?? 1;
  return row;
}

// The request body, or field errors found before asking the server.
function readForm() {
  const body = {};
  const errors = [];
  for (const name of TEXT_FIELDS) body[name] = field(name).value.trim();
  for (const name of NUMBER_FIELDS) {
    const input = field(name);
    if (input.validity.badInput) errors.push({param: name, message: 'must be a number'});
    else if (input.value.trim() !== '') body[name] = Number(input.value);
  }
  body.enabled = field('enabled').checked;
  const key = field('api_key').value.trim();
  if (key) body.api_key = key;  // empty on edit: keep the current key
  body.model_mappings = {};
  for (const row of $$('#mappings .mapping-row')) {
    const model = $('.m-model', row).value.trim();
    const upstream = $('.m-upstream', row).value.trim();
    const weight = $('.m-weight', row).value.trim();
    if (!model && !upstream) continue;  // a blank row
    const param = `${MAPPING_PREFIX}${model}`;
    if (Object.hasOwn(body.model_mappings, model)) {
      errors.push({param, message: 'is given more than once', row});
    }
    body.model_mappings[model] = {upstream_model: upstream, weight: weight === '' ? 1 : Number(weight)};
  }
  return {body, errors};
}

async function submitForm(event) {
  event.preventDefault();
  clearFormErrors();
  const {body, errors} = readForm();
  if (errors.length) {
    errors.forEach((e) => showFieldError(e.param, e.message, e.row));
    return;
  }
  const save = $('#save');
  save.disabled = true;
  try {
    const saved = state.editing ? await api('PATCH', backendPath(state.editing), body)
                                : await api('POST', '/admin/backends', body);
    $('#backend-dialog').close();
    toast(`Saved ${saved?.name ?? body.name}`, 'success');
    refreshAll();
  } catch (err) {
    if (err.status === 409) showFieldError(err.param || 'name', err.message);
    else if (err.status === 422 && err.param) showFieldError(err.param, err.message);
    else if (err.status !== 401) showFormError(err.message);
  } finally {
    save.disabled = false;
  }
}

function showFormError(message) {
  setText('#form-error', message);
}

// Shows `message` at the field `param` names ("api_base_url",
// "model_mappings.gpt-4o.upstream_model"); at the top when no field matches.
function showFieldError(param, message, row) {
  const target = fieldTarget(param, row);
  if (!target) {
    showFormError(`${param}: ${message}`);
    return;
  }
  target.error.textContent = message;
  target.error.hidden = false;
  for (const input of target.inputs) {
    input.classList.add('invalid');
    input.setAttribute('aria-invalid', 'true');
  }
  target.inputs[0]?.focus();
}

function fieldTarget(param, row) {
  if (!param.startsWith(MAPPING_PREFIX)) {
    const error = document.getElementById(`error-${param}`);
    if (!error || !$('#backend-form').contains(error)) return null;
    return {error, inputs: field(param) ? [field(param)] : []};  // "model_mappings" has no input
  }
  // model_mappings.<model>[.upstream_model|.weight]; the model itself may contain dots.
  let model = param.slice(MAPPING_PREFIX.length);
  let inputClass = 'm-model';
  for (const [suffix, cls] of [['.upstream_model', 'm-upstream'], ['.weight', 'm-weight']]) {
    if (model.endsWith(suffix)) {
      model = model.slice(0, -suffix.length);
      inputClass = cls;
      break;
    }
  }
  const match = row || $$('#mappings .mapping-row').find((r) => $('.m-model', r).value.trim() === model);
  if (!match) return {error: $('#error-model_mappings'), inputs: []};
  const error = $('.m-error', match);
  error.id = `error-${param}`;
  return {error, inputs: [$(`.${inputClass}`, match)]};
}

function clearFormErrors() {
  setText('#form-error', '');
  for (const error of $$('#backend-form .field-error')) {
    error.textContent = '';
    error.hidden = true;
    if (error.classList.contains('m-error')) error.removeAttribute('id');
  }
  for (const input of $$('#backend-form .invalid')) clearInvalid(input);
}

function clearInvalid(input) {
  input.classList.remove('invalid');
  input.removeAttribute('aria-invalid');
}

// Editing a field clears its error.
function onFormInput(event) {
  const input = event.target;
  if (!input.classList.contains('invalid')) return;
  clearInvalid(input);
  const row = input.closest('.mapping-row');
  const error = row ? $('.m-error', row) : document.getElementById(`error-${input.name}`);
  if (error && !$$('.invalid', row || input.parentElement).length) {
    error.hidden = true;
    error.textContent = '';
  }
}

function onMappingsClick(event) {
  const remove = event.target.closest('.m-remove');
  if (remove) remove.closest('.mapping-row').remove();
}

// --- Wiring --------------------------------------------------------------------

function init() {
  $('#signin-form').addEventListener('submit', signIn);
  $('#sign-out').addEventListener('click', () => signOut('Signed out.'));
  $('#refresh').addEventListener('click', refreshAll);
  $('#new-backend').addEventListener('click', () => openForm(null));
  $('#backends-table').addEventListener('click', onBackendsClick);
  $('#usage-table').addEventListener('click', onUsageClick);
  $('#keys-table').addEventListener('click', onKeysClick);
  $('#key-form').addEventListener('submit', createKey);
  $('#key-dismiss').addEventListener('click', hideCreatedKey);
  $('#backend-form').addEventListener('submit', submitForm);
  $('#backend-form').addEventListener('input', onFormInput);
  $('#cancel').addEventListener('click', () => $('#backend-dialog').close());
  $('#mappings').addEventListener('click', onMappingsClick);
  $('#add-mapping').addEventListener('click', () => {
    const row = mappingRow('', {});
    $('#mappings').append(row);
    $('.m-model', row).focus();
  });

  const windowSelect = $('#window');
  windowSelect.value = String(prefs.window);
  if (!windowSelect.value) windowSelect.value = '3600';  // a stale preference
  prefs.window = Number(windowSelect.value);
  windowSelect.addEventListener('change', () => {
    prefs.window = Number(windowSelect.value);
    savePrefs();
    refreshStats().catch((err) => toast(err.message, 'error'));
  });
  const auto = $('#auto-refresh');
  auto.checked = prefs.autoRefresh;
  auto.addEventListener('change', () => {
    prefs.autoRefresh = auto.checked;
    savePrefs();
  });
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && prefs.autoRefresh) refreshAll();
  });
  setInterval(tickCountdowns, 1000);

  if (window.Chart) {
    window.Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    window.Chart.defaults.color = '#475569';
  }
  state.token = sessionStorage.getItem(TOKEN_KEY);
  if (state.token) {
    startDashboard();
  } else {
    showView(false);
    $('#token').focus();
  }
}

init();
