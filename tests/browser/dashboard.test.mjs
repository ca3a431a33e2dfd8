// The operator dashboard in a real browser: Debian's headless Chromium
// (/usr/bin/chromium) driven by playwright-core, against the real
// `switchboard serve --demo` binary on 127.0.0.1. No browser is downloaded.
//
//   SWITCHBOARD_BINARY=build/dev/server/switchboard node --test dashboard.test.mjs
//
// Optional environment:
//   SWITCHBOARD_CHROMIUM            browser binary (default /usr/bin/chromium)
//   SWITCHBOARD_DASHBOARD_SCREENSHOT  write a full-page desktop screenshot
//                                   there (docs/images/dashboard.png is made so)
//   SWITCHBOARD_KEEP_TMP=1          keep the temporary directory (db, profile)
//
// The steps share one server and one page and run in order; each checks
// what an operator would see.

import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import {randomBytes} from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, before, describe, it} from 'node:test';
import {setTimeout as sleep} from 'node:timers/promises';

import {chromium} from 'playwright-core';

const BINARY = process.env.SWITCHBOARD_BINARY;
const CHROMIUM = process.env.SWITCHBOARD_CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                       '--disable-component-update', '--disable-sync', '--no-first-run'];
const STOP_GRACE_MS = 10_000;  // SIGTERM, then SIGKILL
const DESKTOP = {width: 1280, height: 900};
const PHONE = {width: 375, height: 800};
const NEW_BACKEND = 'browser-test';

// --- The server ----------------------------------------------------------------

// Starts `switchboard serve --demo` on an ephemeral port; resolves once it
// prints its address.
function startServer(dir, token) {
  const env = {...process.env, SWITCHBOARD_ADMIN_TOKEN: token};
  // Nothing from the caller's environment may change the server under test.
  for (const name of ['SWITCHBOARD_CLIENT_KEYS', 'SWITCHBOARD_LISTEN', 'SWITCHBOARD_DB',
                      'SWITCHBOARD_MASTER_KEY']) {
    delete env[name];
  }
  const child = spawn(BINARY, ['serve', '--demo', '--listen', '127.0.0.1:0', '--db', path.join(dir, 'sb.db')],
                      {env, stdio: ['ignore', 'pipe', 'pipe']});
  const server = {child, pid: child.pid, output: '', exited: null, base: null};
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => {
    server.exited = {code, signal};
    resolve(server.exited);
  }));
  server.exitedPromise = exited;
  const collect = (chunk) => { server.output += chunk; };
  child.stdout.setEncoding('utf8').on('data', collect);
  child.stderr.setEncoding('utf8').on('data', collect);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no address printed within 20 s:\n${server.output}`)),
                             20_000);
    const onData = () => {
      const m = /switchboard listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(server.output);
      if (!m) return;
      clearTimeout(timer);
      child.stdout.off('data', onData);
      server.base = m[1];
      resolve(server);
    };
    child.stdout.on('data', onData);
    child.once('error', (err) => { clearTimeout(timer); reject(err); });
    exited.then(({code, signal}) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code ?? signal}) before listening:\n${server.output}`));
    });
  });
}

// SIGTERM by PID, SIGKILL if it has not exited within the grace period.
async function stopServer(server) {
  if (!server || server.exited) return server?.exited;
  try {
    process.kill(server.pid, 'SIGTERM');
  } catch {
    return server.exited;  // already gone
  }
  // An unreferenced timer: it must not keep node alive once the server is gone.
  const graceful = await Promise.race([server.exitedPromise,
                                       sleep(STOP_GRACE_MS, null, {ref: false})]);
  if (graceful) return graceful;
  try {
    process.kill(server.pid, 'SIGKILL');
  } catch {
    // exited meanwhile
  }
  return server.exitedPromise;
}

// --- Shared state --------------------------------------------------------------

const token = `sbt-${randomBytes(24).toString('base64url')}`;
let tmp;
let server;
let context;
let page;
const pageErrors = [];    // uncaught exceptions and console errors in the page
const offsiteRequests = [];

// The admin API from node, with the token.
async function adminApi(method, apiPath, body) {
  const res = await fetch(server.base + apiPath, {
    method,
    headers: {Authorization: `Bearer ${token}`, 'Content-Type': 'application/json'},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return {status: res.status, body: text ? JSON.parse(text) : null};
}

async function backendByName(name) {
  const {status, body} = await adminApi('GET', '/admin/backends');
  assert.equal(status, 200);
  return body.data.find((b) => b.name === name);
}

// One chat completion through the proxy; returns what routed it.
async function chat(i) {
  const res = await fetch(`${server.base}/v1/chat/completions`, {
    method: 'POST',
    headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({model: 'gpt-4o-mini', messages: [{role: 'user', content: `hello ${i}`}]}),
  });
  const body = await res.json();
  return {status: res.status, backend: res.headers.get('x-switchboard-backend'),
          attempts: Number(res.headers.get('x-switchboard-attempts')), body};
}

// The Chart.js instances' data, read from the page: per chart, the sum over
// all datasets, how many points hold a value, and the datasets' labels.
function charts() {
  return page.evaluate(() => {
    const out = {};
    for (const id of ['chart-requests', 'chart-errors', 'chart-latency', 'chart-tokens']) {
      const chart = window.Chart?.getChart(document.getElementById(id));
      if (!chart) {
        out[id] = null;
        continue;
      }
      const values = chart.data.datasets.flatMap((d) => d.data).filter((v) => Number.isFinite(v));
      out[id] = {sum: values.reduce((a, v) => a + v, 0), points: values.length,
                 labels: chart.data.datasets.map((d) => d.label),
                 sums: Object.fromEntries(chart.data.datasets.map((d) => [
                   d.label, d.data.filter((v) => Number.isFinite(v)).reduce((a, v) => a + v, 0)])),
                 buckets: chart.data.labels.length};
    }
    return out;
  });
}

const backendRow = (name) => page.locator(`#backends-table tr[data-backend-name="${name}"]`);
const rowCell = (name, label) => backendRow(name).locator(`td[data-label="${label}"]`);

// The token must never be in the page's markup or its address (nor in
// localStorage or a cookie: only the tab's sessionStorage may hold it).
async function assertTokenNotExposed(where) {
  assert.ok(!page.url().includes(token), `token in the URL ${where}`);
  const html = await page.content();
  assert.ok(!html.includes(token), `token in the page source ${where}`);
  const kept = await page.evaluate(() => JSON.stringify({local: {...localStorage}, cookie: document.cookie}));
  assert.ok(!kept.includes(token), `token in localStorage or a cookie ${where}`);
}

async function assertNoHorizontalOverflow(where) {
  const m = await page.evaluate(() => ({
    viewport: document.documentElement.clientWidth,
    doc: document.documentElement.scrollWidth,
    body: document.body.scrollWidth,
    widest: [...document.body.querySelectorAll('*')]
        .filter((e) => e.getClientRects().length && !e.closest('.table-wrap'))
        .map((e) => ({e: `${e.tagName.toLowerCase()}${e.id ? `#${e.id}` : ''}.${e.className}`,
                      right: Math.round(e.getBoundingClientRect().right)}))
        .filter((x) => x.right > document.documentElement.clientWidth + 1)
        .slice(0, 5),
  }));
  assert.ok(m.body <= m.viewport && m.doc <= m.viewport,
            `horizontal overflow ${where}: ${JSON.stringify(m)}`);
}

// --- Setup / teardown ----------------------------------------------------------

before(async () => {
  assert.ok(BINARY, 'set SWITCHBOARD_BINARY to the switchboard binary');
  assert.ok(fs.existsSync(BINARY), `no server binary at ${BINARY}`);
  assert.ok(fs.existsSync(CHROMIUM), `no browser at ${CHROMIUM} (Debian package chromium)`);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-browser-'));
  server = await startServer(tmp, token);
  // A fresh profile every run.
  context = await chromium.launchPersistentContext(path.join(tmp, 'profile'), {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: DESKTOP,
    deviceScaleFactor: 1,
    locale: 'en-US',
    timezoneId: 'UTC',
  });
  context.setDefaultTimeout(15_000);
  // Everything the page loads comes from the server under test.
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(`${server.base}/`)) return route.continue();
    offsiteRequests.push(url);
    return route.abort();
  });
  page = context.pages()[0] ?? await context.newPage();
  page.on('pageerror', (err) => pageErrors.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    // The browser logs each non-2xx fetch: the wrong token's 401 and the bad
    // URL's 422 are expected.
    if (msg.type() === 'error' && !/Failed to load resource.*status of (401|422)/.test(msg.text())) {
      pageErrors.push(`console: ${msg.text()}`);
    }
  });
});

after(async () => {
  await context?.close().catch(() => {});
  const exit = await stopServer(server);
  if (server && exit && exit.code !== 0) {
    console.error(`server exit ${JSON.stringify(exit)}; output:\n${server.output}`);
  }
  if (tmp && process.env.SWITCHBOARD_KEEP_TMP !== '1') fs.rmSync(tmp, {recursive: true, force: true});
});

// A crash of this process must not leave the server running.
process.once('exit', () => {
  if (server && !server.exited) {
    try { process.kill(server.pid, 'SIGKILL'); } catch { /* gone */ }
  }
});

// --- The scenario --------------------------------------------------------------

describe('dashboard', () => {
  it('asks for the admin token, and signs in with it', async () => {
    await page.goto(`${server.base}/`);
    await page.locator('#signin-view').waitFor({state: 'visible'});
    assert.equal(await page.locator('#dashboard-view').isVisible(), false);

    // A wrong token is refused, and stays out of the page too.
    await page.fill('#token', 'not-the-admin-token-0000');
    await page.click('#sign-in');
    await page.locator('#signin-error').waitFor({state: 'visible'});
    assert.match(await page.textContent('#signin-error'), /token/i);
    assert.equal(await page.locator('#dashboard-view').isVisible(), false);
    assert.ok(!(await page.content()).includes('not-the-admin-token'));

    await page.fill('#token', token);
    await page.click('#sign-in');
    await page.locator('#dashboard-view').waitFor({state: 'visible'});
    assert.equal(await page.inputValue('#token'), '', 'the token input is cleared after sign-in');
    await assertTokenNotExposed('after sign-in');
  });

  it('shows the demo backends and pools', async () => {
    await backendRow('demo-primary').waitFor();
    await backendRow('demo-fallback').waitFor();
    assert.equal(await rowCell('demo-primary', 'Pool').textContent(), 'primary');
    assert.equal(await rowCell('demo-fallback', 'Pool').textContent(), 'fallback');
    assert.equal(await rowCell('demo-primary', 'Status').textContent(), 'healthy');
    // The key is write-only: only its hint shows.
    assert.match(await rowCell('demo-primary', 'Key').textContent(), /^….{1,4}$/);
    await page.locator('#pools [data-pool="primary"]').waitFor();
    await page.locator('#pools [data-pool="fallback"]').waitFor();
    // Fresh store: no traffic yet.
    await page.locator('#usage-empty').waitFor({state: 'visible'});
  });

  it('shows the API\'s validation message at the field, creates nothing, then saves', async () => {
    await page.click('#new-backend');
    await page.locator('#backend-dialog').waitFor({state: 'visible'});
    await page.fill('#f-name', NEW_BACKEND);
    await page.fill('#f-label', 'Created by the browser test');
    await page.fill('#f-api_base_url', 'ftp://x');
    await page.fill('#f-api_key', 'sk-browser-test-secret-9f2c');
    await page.fill('#f-pool', 'spare');  // its own pool: demo traffic never goes there
    await page.fill('#mappings .mapping-row .m-model', 'browser-test-model');
    await page.fill('#mappings .mapping-row .m-upstream', 'upstream-model-1');

    const [rejected] = await Promise.all([
      page.waitForResponse((r) => r.url() === `${server.base}/admin/backends` &&
                                  r.request().method() === 'POST'),
      page.click('#save'),
    ]);
    assert.equal(rejected.status(), 422);
    const apiError = (await rejected.json()).error;
    assert.equal(apiError.param, 'api_base_url');
    const message = page.locator('#error-api_base_url');
    await message.waitFor({state: 'visible'});
    assert.equal(await message.textContent(), apiError.message, 'the API\'s own message is shown');
    assert.equal(await page.getAttribute('#f-api_base_url', 'aria-invalid'), 'true');
    assert.equal(await page.locator('#backend-dialog').isVisible(), true, 'the dialog stays open');
    assert.equal(await backendByName(NEW_BACKEND), undefined, 'nothing was created');
    assert.equal(await backendRow(NEW_BACKEND).count(), 0);

    // Editing the field clears its error; nothing listens on port 9.
    await page.fill('#f-api_base_url', 'http://127.0.0.1:9/v1');
    await message.waitFor({state: 'hidden'});
    const [created] = await Promise.all([
      page.waitForResponse((r) => r.url() === `${server.base}/admin/backends` &&
                                  r.request().method() === 'POST'),
      page.click('#save'),
    ]);
    assert.equal(created.status(), 201);
    await page.locator('#backend-dialog').waitFor({state: 'hidden'});
    await backendRow(NEW_BACKEND).waitFor();
    assert.equal(await rowCell(NEW_BACKEND, 'Pool').textContent(), 'spare');
    assert.equal(await rowCell(NEW_BACKEND, 'Key').textContent(), '…9f2c');
    assert.match(await rowCell(NEW_BACKEND, 'Name').textContent(), /http:\/\/127\.0\.0\.1:9\/v1/);
    const stored = await backendByName(NEW_BACKEND);
    assert.equal(stored.api_base_url, 'http://127.0.0.1:9/v1');
    assert.deepEqual(Object.keys(stored.model_mappings), ['browser-test-model']);
    assert.equal(stored.api_key, undefined, 'the key is never returned');
    await page.locator('#pools [data-pool="spare"]').waitFor();
  });

  it('charts and lists the proxied traffic on auto-refresh', async () => {
    await page.waitForFunction(() => window.Chart?.getChart(document.getElementById('chart-tokens')));
    const before = await charts();
    assert.equal(before['chart-requests'].sum, 0, `no traffic charted yet: ${JSON.stringify(before)}`);
    assert.equal(before['chart-latency'].points, 0, JSON.stringify(before));
    assert.equal(await page.locator('#usage-table tbody.usage-group').count(), 0);

    const results = [];
    for (let i = 0; i < 30; i++) results.push(await chat(i));
    for (const r of results) {
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.model, 'gpt-4o-mini');
    }
    const failovers = results.filter((r) => r.attempts === 2 && r.backend === 'demo-fallback');
    assert.ok(failovers.length >= 1, `a 429 of demo-primary moved a request on: ${JSON.stringify(
        results.map((r) => [r.backend, r.attempts]))}`);

    // No click: the page refreshes itself every 5 s (usage is written in the
    // background, so it may take two rounds).
    await page.waitForFunction(() => {
      const chart = window.Chart?.getChart(document.getElementById('chart-requests'));
      const charted = chart ? chart.data.datasets.reduce((s, d) => s + d.data.reduce((a, v) => a + (v || 0), 0), 0) : 0;
      return charted >= 30 && document.querySelectorAll('#usage-table tbody.usage-group').length >= 30;
    }, null, {timeout: 20_000, polling: 250});

    const after = await charts();
    const shown = JSON.stringify(after);
    assert.equal(after['chart-requests'].sum, 30, shown);
    assert.ok(after['chart-requests'].labels.includes('demo-fallback'), shown);
    assert.ok(after['chart-requests'].labels.includes('demo-primary'), shown);
    // Mock upstreams on loopback answer within a millisecond: latency may be 0.
    assert.ok(after['chart-latency'].points > 0, `latency is charted: ${shown}`);
    assert.ok(after['chart-tokens'].sum > 0, `tokens are charted: ${shown}`);
    // Every request succeeded: the 429s were absorbed by failover, and the
    // chart still shows them as upstream 429s.
    assert.equal(after['chart-errors'].sums.errors, 0, shown);
    assert.equal(after['chart-errors'].sums['429s to clients'], 0, shown);
    assert.ok(after['chart-errors'].sums['upstream 429s'] >= 1, shown);
    assert.notEqual(await page.textContent('#totals [data-total="upstream_429"]'), '0');
    assert.equal(await page.textContent('#totals [data-total="requests"]'), '30');

    // Every request has a decision trace; a failover's shows both backends.
    const groups = page.locator('#usage-table tbody.usage-group');
    assert.equal(await page.locator('#usage-empty').isVisible(), false);
    for (const text of await groups.locator('button[data-action="trace"]').allTextContents()) {
      assert.match(text, /^Show \([1-9]\d*\)$/);
    }
    const failover = groups.filter({has: page.locator('td[data-label="Attempts"]', {hasText: /^2$/})}).last();
    await failover.locator('td[data-label="Model"]').click();
    const trace = failover.locator('tr.trace-row');
    await trace.waitFor();
    const steps = trace.locator('li.trace-step');
    assert.ok(await steps.count() >= 2);
    assert.match(await steps.nth(0).textContent(), /demo-primary.*primary.*tried.*HTTP 429/);
    assert.match(await steps.nth(1).textContent(), /demo-fallback.*fallback.*tried.*HTTP 200/);
    assert.equal(await failover.locator('button[data-action="trace"]').getAttribute('aria-expanded'), 'true');

    // The request right after it found demo-primary cooling and skipped it.
    const next = failover.locator('xpath=preceding-sibling::tbody[1]');
    await next.locator('td[data-label="Model"]').click();
    const skipped = next.locator('tr.trace-row li.trace-step').first();
    await skipped.waitFor();
    assert.match(await skipped.textContent(), /demo-primary.*skipped: cooling down.*until/);
    assert.equal(await skipped.locator('.badge').getAttribute('class'), 'badge badge-cooling');

    // The demo primary's cooldown was recorded.
    await page.locator('#cooldowns-table tbody tr', {hasText: 'demo-primary'}).first().waitFor();
    await assertTokenNotExposed('with data');
  });

  it('resets a cooldown from the backend\'s row', async () => {
    // Make sure demo-primary is cooling with time to spare: one 429 of it
    // cools it for 5 s (base cooldown; Retry-After is 2 s).
    const deadline = Date.now() + 20_000;
    let primary;
    for (let i = 100; ; i++) {
      primary = await backendByName('demo-primary');
      const left = primary.cooldown_until ? Date.parse(primary.cooldown_until) - Date.now() : 0;
      if (primary.status === 'cooling' && left > 3000) break;
      assert.ok(Date.now() < deadline, `demo-primary never cooled down: ${JSON.stringify(primary)}`);
      const r = await chat(i);
      assert.equal(r.status, 200);
      if (r.backend === 'demo-fallback' && r.attempts === 1) await sleep(200);  // still cooling
    }
    assert.ok(primary.consecutive_429_count >= 1);

    await page.click('#refresh');
    await rowCell('demo-primary', 'Status').filter({hasText: /^cooling$/}).waitFor();
    assert.notEqual(await rowCell('demo-primary', '429s').textContent(), '0');
    // The live countdown, unless the cooldown already ran out while a slow
    // (sanitized) server answered the refresh; then the cell reads '—'. The
    // row may still be the one an earlier auto-refresh drew (cooling, from a
    // cooldown that has ended): wait for the refresh to redraw it.
    const cooldownCell = rowCell('demo-primary', 'Cooldown');
    const left = Date.parse(primary.cooldown_until) - Date.now();
    if (left > 1500) {
      await cooldownCell.filter({hasText: /^\d+s$/}).waitFor({timeout: left - 500});
    } else {
      assert.match(await cooldownCell.textContent(), /^(\d+s|—)$/);
    }

    await backendRow('demo-primary').locator('button[data-action="reset"]').click();
    await rowCell('demo-primary', 'Status').filter({hasText: /^healthy$/}).waitFor({timeout: 5000});
    assert.equal(await rowCell('demo-primary', '429s').textContent(), '0');
    assert.equal(await rowCell('demo-primary', 'Cooldown').textContent(), '—');
    await page.locator('#toasts .toast-success', {hasText: 'Cooldown of demo-primary reset'}).waitFor();

    const reset = await adminApi('GET', `/admin/backends/${encodeURIComponent(primary.id)}`);
    assert.equal(reset.status, 200);
    assert.equal(reset.body.status, 'healthy');
    assert.equal(reset.body.consecutive_429_count, 0);
    assert.equal(reset.body.cooldown_until, null);
  });

  it('saves a desktop screenshot when asked to', async (t) => {
    const target = process.env.SWITCHBOARD_DASHBOARD_SCREENSHOT;
    if (!target) {
      t.skip('SWITCHBOARD_DASHBOARD_SCREENSHOT not set');
      return;
    }
    await page.setViewportSize(DESKTOP);
    // The last 15 minutes, so the bars are visible; no toast over the charts.
    await page.selectOption('#window', '900');
    await page.waitForFunction(
        () => window.Chart.getChart(document.getElementById('chart-requests')).data.labels.length <= 16);
    await page.evaluate(() => {
      document.getElementById('toasts').replaceChildren();
      window.scrollTo(0, 0);
    });
    await page.waitForTimeout(200);  // charts follow the resize
    fs.mkdirSync(path.dirname(path.resolve(target)), {recursive: true});
    await page.screenshot({path: target, fullPage: true, animations: 'disabled', caret: 'hide'});
    assert.ok(fs.statSync(target).size > 10_000);
  });

  it('creates a client key, shows it once, and revokes it at once', async () => {
    await page.fill('#key-name', 'browser-app');
    await page.click('#key-form button[type="submit"]');
    await page.locator('#key-created').waitFor({state: 'visible'});
    const secret = await page.textContent('#key-secret');
    assert.match(secret, /^sbk_[0-9a-f]{48}$/);
    const row = page.locator('#keys-table tr[data-testid="key-row"]', {hasText: 'browser-app'});
    await row.waitFor();
    assert.match(await row.textContent(), /active/);
    assert.ok(!(await row.textContent()).includes(secret), 'the list never shows the key');
    // The proxy now wants a key, and takes this one.
    const models = (key) => fetch(`${server.base}/v1/models`,
        {headers: key ? {Authorization: `Bearer ${key}`} : {}}).then((r) => r.status);
    assert.equal(await models(null), 401);
    assert.equal(await models(secret), 200);
    await page.click('#key-dismiss');
    assert.equal(await page.locator('#key-created').isVisible(), false);
    assert.equal(await page.textContent('#key-secret'), '');

    page.once('dialog', (dialog) => dialog.accept());
    await row.locator('button[data-action="revoke"]').click();
    await row.locator('.badge', {hasText: 'revoked'}).waitFor();
    assert.equal(await models(secret), 401);
  });

  it('fits a 375 px wide screen without horizontal overflow', async () => {
    await page.setViewportSize(PHONE);
    await page.waitForFunction(
        () => document.getElementById('chart-requests').getBoundingClientRect().width <= 375);
    await assertNoHorizontalOverflow('of the dashboard at 375 px');

    await page.click('#new-backend');
    await page.locator('#backend-dialog').waitFor({state: 'visible'});
    await assertNoHorizontalOverflow('with the form open at 375 px');
    const dialog = await page.locator('#backend-dialog').boundingBox();
    assert.ok(dialog.x >= 0 && dialog.x + dialog.width <= PHONE.width, JSON.stringify(dialog));
    await page.click('#cancel');
    await page.locator('#backend-dialog').waitFor({state: 'hidden'});
  });

  it('signs out and leaves nothing of the session in the page', async () => {
    await page.setViewportSize(DESKTOP);
    await page.click('#sign-out');
    await page.locator('#signin-view').waitFor({state: 'visible'});
    assert.equal(await page.locator('#backends-table tbody tr').count(), 0);
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    await assertTokenNotExposed('after sign-out');
  });

  it('raised no errors in the page and fetched nothing from elsewhere', () => {
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(offsiteRequests, []);
  });

  it('stops the server with exit status 0 on SIGTERM', async () => {
    await context.close();
    context = null;
    const t0 = Date.now();
    const exit = await stopServer(server);
    assert.deepEqual(exit, {code: 0, signal: null}, server.output);
    assert.ok(Date.now() - t0 < STOP_GRACE_MS, 'it did not need SIGKILL');
  });
});
