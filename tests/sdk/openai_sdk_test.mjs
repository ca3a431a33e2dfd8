// The official `openai` npm SDK as a real client of `switchboard serve`.
//
// Starts its own mock OpenAI upstream (node:http on 127.0.0.1, ephemeral
// port), writes an --import file pointing at it, spawns the server binary
// (path from $SWITCHBOARD_BINARY) on 127.0.0.1:0 with a fresh master key and
// a client key, and talks to it with `new OpenAI({ baseURL, apiKey })`.
//
//   SWITCHBOARD_BINARY=build/ci/server/switchboard node --test tests/sdk/openai_sdk_test.mjs
//
// Registered in ctest as sdk.openai (tests/integration/CMakeLists.txt).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import http from 'node:http';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';

const BACKEND_KEY = 'sk-sdk-backend-key';
const CLIENT_KEY = 'sb-sdk-client-key';
const UPSTREAM_MODEL = 'gpt-4o-sdk-upstream';
const PIECES = ['Hello', ' from', ' the', ' mock', '.'];
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 15_000;

// ---- The mock upstream ----

const received = []; // {path, headers, body}

function completionChunk(delta, finish) {
  return {
    id: 'chatcmpl-sdk',
    object: 'chat.completion.chunk',
    created: 1767225600,
    model: UPSTREAM_MODEL,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
  };
}

function handleUpstream(req, res) {
  let raw = '';
  req.setEncoding('utf8');
  req.on('data', (c) => (raw += c));
  req.on('end', () => {
    let body = {};
    try {
      body = JSON.parse(raw);
    } catch {
      // recorded as is; the assertions will notice
    }
    received.push({ path: req.url, headers: req.headers, body });
    if (req.headers.authorization !== `Bearer ${BACKEND_KEY}`) {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { message: 'bad key', type: 'invalid_request_error', param: null, code: 'invalid_api_key' } }));
      return;
    }
    if (req.url === '/v1/chat/completions' && body.stream) {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      const events = [completionChunk({ role: 'assistant', content: '' }, null)];
      for (const p of PIECES) events.push(completionChunk({ content: p }, null));
      events.push(completionChunk({}, 'stop'));
      events.push({ ...completionChunk({}, null), choices: [], usage: { prompt_tokens: 9, completion_tokens: 5, total_tokens: 14 } });
      let i = 0;
      const next = () => {
        if (i < events.length) {
          res.write(`data: ${JSON.stringify(events[i++])}\n\n`);
          setTimeout(next, 10);
        } else {
          res.end('data: [DONE]\n\n');
        }
      };
      next();
      return;
    }
    if (req.url === '/v1/chat/completions') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({
        id: 'chatcmpl-sdk',
        object: 'chat.completion',
        created: 1767225600,
        model: UPSTREAM_MODEL,
        choices: [{ index: 0, message: { role: 'assistant', content: PIECES.join('') }, logprobs: null, finish_reason: 'stop' }],
        usage: { prompt_tokens: 9, completion_tokens: 5, total_tokens: 14 },
      }));
      return;
    }
    if (req.url === '/v1/embeddings') {
      const vector = [0.25, -0.5, 1];
      // The SDK asks for base64 by default and decodes it.
      const embedding = body.encoding_format === 'base64'
        ? Buffer.from(new Float32Array(vector).buffer).toString('base64')
        : vector;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({
        object: 'list',
        data: [{ object: 'embedding', index: 0, embedding }],
        model: 'emb-sdk-upstream',
        usage: { prompt_tokens: 1, total_tokens: 1 },
      }));
      return;
    }
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: { message: `mock: nothing at ${req.url}`, type: 'invalid_request_error', param: null, code: 'not_found' } }));
  });
}

// ---- The server process ----

let upstream;
let server; // ChildProcess
let output = '';
let baseURL;
let tmp;

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms\n--- server output ---\n${output}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

before(async () => {
  const binary = process.env.SWITCHBOARD_BINARY;
  assert.ok(binary, 'set SWITCHBOARD_BINARY to the switchboard executable');

  upstream = http.createServer(handleUpstream);
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  const upstreamBase = `http://127.0.0.1:${upstream.address().port}/v1`;

  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-sdk-'));
  const importFile = path.join(tmp, 'backends.json');
  fs.writeFileSync(importFile, JSON.stringify([{
    name: 'sdk-primary',
    api_base_url: upstreamBase,
    api_key: BACKEND_KEY,
    api: 'openai',
    pool: 'primary',
    timeout_seconds: 30,
    model_mappings: {
      'gpt-4o': { upstream_model: UPSTREAM_MODEL, weight: 1 },
      'text-embedding-3-small': { upstream_model: 'emb-sdk-upstream', weight: 1 },
    },
  }]));

  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SWITCHBOARD_')));
  env.SWITCHBOARD_MASTER_KEY = crypto.randomBytes(32).toString('base64');
  env.SWITCHBOARD_CLIENT_KEYS = CLIENT_KEY;
  server = spawn(binary, ['serve', '--listen', '127.0.0.1:0', '--db', path.join(tmp, 'sb.db'), '--import', importFile], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  server.stderr.setEncoding('utf8');
  server.stderr.on('data', (d) => (output += d));
  server.stdout.setEncoding('utf8');
  const listening = new Promise((resolve, reject) => {
    let stdout = '';
    server.stdout.on('data', (d) => {
      output += d;
      stdout += d;
      const m = /switchboard listening on (http:\/\/127\.0\.0\.1:\d+)\n/.exec(stdout);
      if (m) resolve(m[1]);
    });
    server.once('exit', (code, signal) => reject(new Error(`server exited (${code ?? signal}) before listening\n${output}`)));
    server.once('error', reject);
  });
  const origin = await withTimeout(listening, START_TIMEOUT_MS, 'server start');
  baseURL = `${origin}/v1`;
});

after(async () => {
  if (server && server.exitCode === null && server.signalCode === null) {
    const exited = once(server, 'exit');
    server.kill('SIGTERM'); // only our own child, by its handle
    try {
      const [code] = await withTimeout(exited, STOP_TIMEOUT_MS, 'server stop');
      assert.equal(code, 0, `server exit code after SIGTERM\n${output}`);
    } catch (e) {
      server.kill('SIGKILL');
      throw e;
    }
  }
  if (upstream) {
    upstream.closeAllConnections?.();
    await new Promise((resolve) => upstream.close(resolve));
  }
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

function client(apiKey = CLIENT_KEY) {
  return new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 30_000 });
}

function lastUpstreamRequest() {
  assert.ok(received.length > 0, 'the upstream received no request');
  return received[received.length - 1];
}

// ---- Tests ----

test('a chat completion through the SDK', async () => {
  const before = received.length;
  const { data, response } = await client()
    .chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] })
    .withResponse();
  assert.equal(data.choices[0].message.content, PIECES.join(''));
  assert.equal(data.choices[0].finish_reason, 'stop');
  assert.equal(data.usage.completion_tokens, 5);
  assert.equal(response.headers.get('x-switchboard-backend'), 'sdk-primary');
  assert.equal(response.headers.get('x-switchboard-attempts'), '1');
  assert.match(response.headers.get('x-request-id') ?? '', /\S/);

  assert.equal(received.length, before + 1);
  const up = lastUpstreamRequest();
  assert.equal(up.path, '/v1/chat/completions');
  assert.equal(up.body.model, UPSTREAM_MODEL);
  assert.equal(up.headers.authorization, `Bearer ${BACKEND_KEY}`);
  assert.ok(!JSON.stringify(up.headers).includes(CLIENT_KEY), 'the client key reached the upstream');
});

test('a streamed chat completion through the SDK', async () => {
  const stream = await client().chat.completions.create({
    model: 'gpt-4o',
    messages: [{ role: 'user', content: 'hi' }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let finish = null;
  let usage = null;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    const choice = chunk.choices[0];
    if (choice?.delta?.content) text += choice.delta.content;
    if (choice?.finish_reason) finish = choice.finish_reason;
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(text, PIECES.join(''));
  assert.equal(finish, 'stop');
  assert.equal(chunks, PIECES.length + 3);
  assert.ok(usage, 'no usage chunk');
  assert.equal(usage.prompt_tokens, 9);
  assert.equal(usage.completion_tokens, 5);

  const up = lastUpstreamRequest();
  assert.equal(up.body.stream, true);
  assert.equal(up.body.model, UPSTREAM_MODEL);
});

test('embeddings through the SDK (base64, decoded by the SDK)', async () => {
  const res = await client().embeddings.create({ model: 'text-embedding-3-small', input: 'hi' });
  assert.deepEqual(res.data[0].embedding, [0.25, -0.5, 1]);
  assert.equal(lastUpstreamRequest().body.model, 'emb-sdk-upstream');
});

test('an unknown model is the SDK\'s NotFoundError with code model_not_found', async () => {
  await assert.rejects(
    client().chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] }),
    (err) => {
      assert.ok(err instanceof OpenAI.NotFoundError, `got ${err}`);
      assert.equal(err.status, 404);
      assert.equal(err.code, 'model_not_found');
      return true;
    },
  );
});

test('a wrong client key is the SDK\'s AuthenticationError', async () => {
  await assert.rejects(
    client('sb-wrong-key').chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
    (err) => {
      assert.ok(err instanceof OpenAI.AuthenticationError, `got ${err}`);
      assert.equal(err.status, 401);
      return true;
    },
  );
});

test('models.list through the SDK', async () => {
  const ids = [];
  for await (const model of client().models.list()) ids.push(model.id);
  assert.deepEqual(ids.sort(), ['gpt-4o', 'text-embedding-3-small']);
});
