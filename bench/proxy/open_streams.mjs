// Opens N streaming requests at once through the gateway and reports the
// gateway's RSS, threads and file descriptors while they are all open.
//   node open_streams.mjs URL N BODY_FILE GATEWAY_PID
import fs from 'node:fs';
import http from 'node:http';

const [url, nArg, bodyFile, pid] = process.argv.slice(2);
const n = Number(nArg);
const body = JSON.parse(fs.readFileSync(bodyFile, 'utf8'));
body.stream = true;
const payload = JSON.stringify(body);
const target = new URL(url);
const agent = new http.Agent({ keepAlive: false, maxSockets: n });

function status() {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const get = (k) => (s.match(new RegExp(`^${k}:\\s+(\\d+)`, 'm')) || [])[1];
  return { rss_kb: Number(get('VmRSS')), threads: Number(get('Threads')),
           fds: fs.readdirSync(`/proc/${pid}/fd`).length };
}

const before = status();
let open = 0, firstChunks = 0, done = 0, errors = 0, peak = before;
const started = Date.now();
await new Promise((resolve) => {
  for (let i = 0; i < n; i++) {
    const req = http.request({ host: target.hostname, port: target.port, path: target.pathname,
      method: 'POST', agent, headers: { 'content-type': 'application/json' }, timeout: 120000 }, (res) => {
      open++;
      let got = false;
      res.on('data', () => { if (!got) { got = true; firstChunks++; } });
      res.on('end', () => { done++; if (done + errors === n) resolve(); });
    });
    req.on('error', () => { errors++; if (done + errors === n) resolve(); });
    req.end(payload);
  }
  const timer = setInterval(() => {
    const s = status();
    if (s.rss_kb > peak.rss_kb) peak = s;
    if (done + errors === n || Date.now() - started > 120000) { clearInterval(timer); resolve(); }
  }, 50);
});
console.log(JSON.stringify({ streams: n, responded: open, first_chunks: firstChunks, completed: done,
  errors, before, peak, seconds: (Date.now() - started) / 1000 }));
