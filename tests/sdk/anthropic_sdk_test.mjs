// The official `@anthropic-ai/sdk` npm package (and the `openai` one) as real
// clients of `switchboard serve` across wire formats: the Anthropic SDK
// against an Anthropic backend (pass-through) and against an OpenAI backend
// (translated), and the OpenAI SDK against an Anthropic backend (translated),
// streaming and not, tool calls included.
//
// One mock upstream (node:http on 127.0.0.1, ephemeral port) answers both
// /v1/messages (Anthropic, x-api-key) and /v1/chat/completions (OpenAI,
// Bearer); two backends point at it, one per api.
//
//   SWITCHBOARD_BINARY=build/ci/server/switchboard node --test tests/sdk/anthropic_sdk_test.mjs
//
// Registered in ctest as sdk.anthropic (tests/integration/CMakeLists.txt).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import http from 'node:http';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';

const ANTHROPIC_KEY = 'sk-ant-sdk-backend-key';
const OPENAI_KEY = 'sk-oai-sdk-backend-key';
const CLIENT_KEY = 'sb-sdk-client-key';
const PIECES = ['Hello', ' across', ' formats', '.'];
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 15_000;

// ---- The mock upstream ----

const received = []; // {path, headers, body}

function lastUser(body) {
  const user = [...(body.messages ?? [])].reverse().find((m) => m.role === 'user');
  if (!user) return '';
  if (typeof user.content === 'string') return user.content;
  return user.content.filter((p) => p.type === 'text').map((p) => p.text).join('');
}

function writeEvents(res, events, end) {
  let i = 0;
  const next = () => {
    if (i < events.length) {
      res.write(events[i++]);
      setTimeout(next, 5);
    } else {
      res.end(end);
    }
  };
  next();
}

function anthropicEvent(type, data) {
  return `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;
}

function handleMessages(body, res) {
  const wantsTool = (body.tools ?? []).length > 0;
  if (!body.stream) {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({
      id: 'msg_sdk', type: 'message', role: 'assistant', model: body.model,
      content: [{ type: 'text', text: PIECES.join('') }],
      stop_reason: 'end_turn', stop_sequence: null,
      usage: { input_tokens: 21, output_tokens: 4 },
    }));
    return;
  }
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  const events = [anthropicEvent('message_start', {
    message: { id: 'msg_sdk', type: 'message', role: 'assistant', model: body.model, content: [],
      stop_reason: null, stop_sequence: null, usage: { input_tokens: 21, output_tokens: 1 } },
  })];
  if (wantsTool) {
    events.push(anthropicEvent('content_block_start', { index: 0, content_block: { type: 'tool_use', id: 'toolu_sdk', name: 'get_weather', input: {} } }));
    for (const part of ['{"city"', ': "Par', 'is"}']) {
      events.push(anthropicEvent('content_block_delta', { index: 0, delta: { type: 'input_json_delta', partial_json: part } }));
    }
    events.push(anthropicEvent('content_block_stop', { index: 0 }));
    events.push(anthropicEvent('message_delta', { delta: { stop_reason: 'tool_use', stop_sequence: null }, usage: { output_tokens: 9 } }));
  } else {
    events.push(anthropicEvent('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }));
    events.push(anthropicEvent('ping', {}));
    for (const p of PIECES) {
      events.push(anthropicEvent('content_block_delta', { index: 0, delta: { type: 'text_delta', text: p } }));
    }
    events.push(anthropicEvent('content_block_stop', { index: 0 }));
    events.push(anthropicEvent('message_delta', { delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 4 } }));
  }
  writeEvents(res, events, anthropicEvent('message_stop', {}));
}

function chunk(model, delta, finish) {
  return { id: 'chatcmpl-sdk', object: 'chat.completion.chunk', created: 1767225600, model,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] };
}

function handleChat(body, res) {
  const wantsTool = (body.tools ?? []).length > 0;
  const broken = lastUser(body) === 'break please';
  if (!body.stream) {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({
      id: 'chatcmpl-sdk', object: 'chat.completion', created: 1767225600, model: body.model,
      choices: [{ index: 0, message: { role: 'assistant', content: PIECES.join('') }, logprobs: null, finish_reason: 'stop' }],
      usage: { prompt_tokens: 13, completion_tokens: 4, total_tokens: 17 },
    }));
    return;
  }
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  const data = (o) => `data: ${JSON.stringify(o)}\n\n`;
  const events = [data(chunk(body.model, { role: 'assistant', content: '' }, null))];
  if (broken) {
    events.push(data(chunk(body.model, { content: 'Hel' }, null)));
    // An error mid-stream, then the connection ends.
    writeEvents(res, events, data({ error: { message: 'upstream fell over', type: 'server_error', param: null, code: null } }));
    return;
  }
  let finish = 'stop';
  if (wantsTool) {
    events.push(data(chunk(body.model, { tool_calls: [{ index: 0, id: 'call_sdk', type: 'function', function: { name: 'get_weather', arguments: '' } }] }, null)));
    for (const part of ['{"city"', ':"Par', 'is"}']) {
      events.push(data(chunk(body.model, { tool_calls: [{ index: 0, function: { arguments: part } }] }, null)));
    }
    finish = 'tool_calls';
  } else {
    for (const p of PIECES) events.push(data(chunk(body.model, { content: p }, null)));
  }
  events.push(data(chunk(body.model, {}, finish)));
  if (body.stream_options?.include_usage) {
    events.push(data({ ...chunk(body.model, {}, null), choices: [], usage: { prompt_tokens: 13, completion_tokens: 4, total_tokens: 17 } }));
  }
  writeEvents(res, events, 'data: [DONE]\n\n');
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
    if (req.url === '/v1/messages') {
      if (req.headers['x-api-key'] !== ANTHROPIC_KEY || !req.headers['anthropic-version']) {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ type: 'error', error: { type: 'authentication_error', message: 'bad key' } }));
        return;
      }
      handleMessages(body, res);
      return;
    }
    if (req.url === '/v1/chat/completions') {
      if (req.headers.authorization !== `Bearer ${OPENAI_KEY}`) {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { message: 'bad key', type: 'invalid_request_error', param: null, code: 'invalid_api_key' } }));
        return;
      }
      handleChat(body, res);
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
let origin;
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

  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-sdk-anthropic-'));
  const importFile = path.join(tmp, 'backends.json');
  fs.writeFileSync(importFile, JSON.stringify([
    {
      name: 'sdk-anthropic', api_base_url: upstreamBase, api_key: ANTHROPIC_KEY, api: 'anthropic',
      pool: 'primary', timeout_seconds: 30,
      model_mappings: {
        'claude-direct': { upstream_model: 'claude-upstream', weight: 1 },
        'gpt-via-anthropic': { upstream_model: 'claude-upstream', weight: 1 },
      },
    },
    {
      name: 'sdk-openai', api_base_url: upstreamBase, api_key: OPENAI_KEY, api: 'openai',
      pool: 'primary', timeout_seconds: 30,
      model_mappings: { 'claude-via-openai': { upstream_model: 'gpt-upstream', weight: 1 } },
    },
  ]));

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
  origin = await withTimeout(listening, START_TIMEOUT_MS, 'server start');
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

function anthropic() {
  // The SDK appends /v1/messages to the base URL.
  return new Anthropic({ baseURL: origin, apiKey: CLIENT_KEY, maxRetries: 0, timeout: 30_000 });
}

function openai() {
  return new OpenAI({ baseURL: `${origin}/v1`, apiKey: CLIENT_KEY, maxRetries: 0, timeout: 30_000 });
}

function lastUpstreamRequest() {
  assert.ok(received.length > 0, 'the upstream received no request');
  return received[received.length - 1];
}

const WEATHER_TOOL = {
  name: 'get_weather',
  description: 'Weather for a city',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};

// ---- The Anthropic SDK against an Anthropic backend (pass-through) ----

test('Anthropic SDK, Anthropic backend: messages.create', async () => {
  const { data, response } = await anthropic().messages
    .create({ model: 'claude-direct', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] })
    .withResponse();
  assert.equal(data.content[0].text, PIECES.join(''));
  assert.equal(data.stop_reason, 'end_turn');
  assert.equal(data.usage.output_tokens, 4);
  assert.equal(response.headers.get('x-switchboard-backend'), 'sdk-anthropic');
  const up = lastUpstreamRequest();
  assert.equal(up.path, '/v1/messages');
  assert.equal(up.body.model, 'claude-upstream');
  assert.ok(!JSON.stringify(up.headers).includes(CLIENT_KEY), 'the client key reached the upstream');
});

test('Anthropic SDK, Anthropic backend: messages.stream', async () => {
  const stream = anthropic().messages.stream({ model: 'claude-direct', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] });
  let text = '';
  stream.on('text', (t) => (text += t));
  const message = await stream.finalMessage();
  assert.equal(text, PIECES.join(''));
  assert.equal(message.content[0].text, PIECES.join(''));
  assert.equal(message.stop_reason, 'end_turn');
  assert.equal(message.usage.output_tokens, 4);
});

// ---- The Anthropic SDK against an OpenAI backend (translated) ----

test('Anthropic SDK, OpenAI backend: messages.create is translated both ways', async () => {
  const { data, response } = await anthropic().messages
    .create({ model: 'claude-via-openai', max_tokens: 64, system: 'Be brief.', messages: [{ role: 'user', content: 'hi' }] })
    .withResponse();
  assert.equal(data.type, 'message');
  assert.equal(data.role, 'assistant');
  assert.equal(data.content[0].type, 'text');
  assert.equal(data.content[0].text, PIECES.join(''));
  assert.equal(data.stop_reason, 'end_turn');
  assert.equal(data.usage.input_tokens, 13);
  assert.equal(data.usage.output_tokens, 4);
  assert.equal(response.headers.get('x-switchboard-backend'), 'sdk-openai');
  const up = lastUpstreamRequest();
  assert.equal(up.path, '/v1/chat/completions');
  assert.equal(up.body.model, 'gpt-upstream');
  assert.deepEqual(up.body.messages, [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'hi' }]);
  assert.equal(up.body.max_tokens, 64);
});

test('Anthropic SDK, OpenAI backend: messages.stream gets the Messages event sequence', async () => {
  const stream = anthropic().messages.stream({ model: 'claude-via-openai', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] });
  const types = [];
  let text = '';
  stream.on('streamEvent', (e) => types.push(e.type));
  stream.on('text', (t) => (text += t));
  const message = await stream.finalMessage();
  assert.equal(text, PIECES.join(''));
  assert.equal(message.content.length, 1);
  assert.equal(message.content[0].text, PIECES.join(''));
  assert.equal(message.stop_reason, 'end_turn');
  assert.equal(message.usage.output_tokens, 4);
  assert.deepEqual(types, ['message_start', 'content_block_start',
    ...PIECES.map(() => 'content_block_delta'), 'content_block_stop', 'message_delta', 'message_stop']);
  assert.equal(lastUpstreamRequest().body.stream_options.include_usage, true);
});

test('Anthropic SDK, OpenAI backend: a streamed tool call arrives as a tool_use block', async () => {
  const stream = anthropic().messages.stream({
    model: 'claude-via-openai', max_tokens: 64, tools: [WEATHER_TOOL],
    messages: [{ role: 'user', content: 'Weather in Paris?' }],
  });
  const message = await stream.finalMessage();
  assert.equal(message.stop_reason, 'tool_use');
  const use = message.content.find((b) => b.type === 'tool_use');
  assert.ok(use, `no tool_use block in ${JSON.stringify(message.content)}`);
  assert.equal(use.id, 'call_sdk');
  assert.equal(use.name, 'get_weather');
  assert.deepEqual(use.input, { city: 'Paris' });
  const up = lastUpstreamRequest();
  assert.equal(up.body.tools[0].type, 'function');
  assert.equal(up.body.tools[0].function.name, 'get_weather');
});

test('Anthropic SDK, OpenAI backend: an error mid-stream rejects the stream', async () => {
  const stream = anthropic().messages.stream({ model: 'claude-via-openai', max_tokens: 64, messages: [{ role: 'user', content: 'break please' }] });
  stream.on('error', () => {}); // the rejection below is what we check
  await assert.rejects(stream.finalMessage(), (err) => {
    assert.ok(err instanceof Anthropic.APIError, `got ${err}`);
    assert.match(String(err.message), /upstream fell over/);
    return true;
  });
});

test('Anthropic SDK: an unknown model is its NotFoundError', async () => {
  await assert.rejects(
    anthropic().messages.create({ model: 'no-such-model', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] }),
    (err) => {
      assert.ok(err instanceof Anthropic.NotFoundError, `got ${err}`);
      assert.equal(err.status, 404);
      return true;
    },
  );
});

// ---- The OpenAI SDK against an Anthropic backend (translated) ----

test('OpenAI SDK, Anthropic backend: chat.completions.create is translated both ways', async () => {
  const { data, response } = await openai().chat.completions
    .create({ model: 'gpt-via-anthropic', messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'hi' }] })
    .withResponse();
  assert.equal(data.object, 'chat.completion');
  assert.equal(data.choices[0].message.content, PIECES.join(''));
  assert.equal(data.choices[0].finish_reason, 'stop');
  assert.equal(data.usage.prompt_tokens, 21);
  assert.equal(data.usage.completion_tokens, 4);
  assert.equal(data.usage.total_tokens, 25);
  assert.equal(response.headers.get('x-switchboard-backend'), 'sdk-anthropic');
  const up = lastUpstreamRequest();
  assert.equal(up.path, '/v1/messages');
  assert.equal(up.headers['x-api-key'], ANTHROPIC_KEY);
  assert.equal(up.headers['anthropic-version'], '2023-06-01');
  assert.equal(up.headers.authorization, undefined);
  assert.equal(up.body.system, 'Be brief.');
  assert.equal(up.body.max_tokens, 4096);
});

test('OpenAI SDK, Anthropic backend: a streamed chat completion with usage', async () => {
  const stream = await openai().chat.completions.create({
    model: 'gpt-via-anthropic', messages: [{ role: 'user', content: 'hi' }],
    stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let finish = null;
  let usage = null;
  for await (const c of stream) {
    const choice = c.choices[0];
    if (choice?.delta?.content) text += choice.delta.content;
    if (choice?.finish_reason) finish = choice.finish_reason;
    if (c.usage) usage = c.usage;
  }
  assert.equal(text, PIECES.join(''));
  assert.equal(finish, 'stop');
  assert.ok(usage, 'no usage chunk');
  assert.equal(usage.prompt_tokens, 21);
  assert.equal(usage.completion_tokens, 4);
});

test('OpenAI SDK, Anthropic backend: a streamed tool call assembles into tool_calls', async () => {
  const stream = openai().chat.completions.stream({
    model: 'gpt-via-anthropic',
    messages: [{ role: 'user', content: 'Weather in Paris?' }],
    tools: [{ type: 'function', function: { name: 'get_weather', parameters: WEATHER_TOOL.input_schema } }],
  });
  const completion = await stream.finalChatCompletion();
  const choice = completion.choices[0];
  assert.equal(choice.finish_reason, 'tool_calls');
  assert.equal(choice.message.tool_calls.length, 1);
  const call = choice.message.tool_calls[0];
  assert.equal(call.id, 'toolu_sdk');
  assert.equal(call.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Paris' });
  const up = lastUpstreamRequest();
  assert.equal(up.body.tools[0].name, 'get_weather');
  assert.deepEqual(up.body.tools[0].input_schema, WEATHER_TOOL.input_schema);
});
