"""A tiny OpenAI-style upstream for the embedding tests, on 127.0.0.1 only.

Paths (any prefix before /v1 picks a behaviour):
  POST /v1/chat/completions        200: a chat completion; with "stream": true an
                                   SSE stream of three content chunks, a usage
                                   chunk and [DONE]. The answer names the model
                                   it was asked for ("mock answer for MODEL").
  POST /r429/v1/chat/completions   429 with Retry-After: 30
  POST /e500/v1/chat/completions   500
  GET  /requests                   what was received so far, as JSON
                                   [{"path", "authorization", "body"}]

Run a command against it (its exit code is passed on); "{mock}" in the
arguments becomes the server's URL, http://127.0.0.1:PORT:

  /usr/bin/python3 mock_upstream.py -- ./forward {mock}/v1

Or import it: `with MockUpstream() as mock: mock.url`.
"""

import http.server
import json
import re
import subprocess
import sys
import threading


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # keep test output quiet
        pass

    def _send(self, status, body, content_type="application/json", extra=None):
        data = body.encode()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/requests":
            with self.server.lock:
                self._send(200, json.dumps(self.server.received))
        else:
            self._send(404, '{"error":{"message":"not found"}}')

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        raw = self.rfile.read(length).decode()
        with self.server.lock:
            self.server.received.append({
                "path": self.path,
                "authorization": self.headers.get("authorization", ""),
                "body": raw,
            })
        if self.path.startswith("/r429/"):
            self._send(429, '{"error":{"message":"slow down","type":"rate_limit"}}',
                       extra={"retry-after": "30"})
            return
        if self.path.startswith("/e500/"):
            self._send(500, '{"error":{"message":"upstream broke","type":"server_error"}}')
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._send(400, '{"error":{"message":"bad json"}}')
            return
        model = body.get("model", "")
        answer = "mock answer for " + model
        if body.get("stream"):
            self._stream(model, answer)
            return
        self._send(200, json.dumps({
            "id": "chatcmpl-mock", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": answer}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
        }))

    def _stream(self, model, answer):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        words = answer.split(" ")
        pieces = [" ".join(words[:1]), " " + " ".join(words[1:3]), " " + " ".join(words[3:])]
        events = []
        for piece in pieces:
            events.append({"id": "chatcmpl-mock", "object": "chat.completion.chunk",
                           "model": model,
                           "choices": [{"index": 0, "delta": {"content": piece}}]})
        events.append({"id": "chatcmpl-mock", "object": "chat.completion.chunk",
                       "model": model, "choices": [],
                       "usage": {"prompt_tokens": 5, "completion_tokens": 4}})
        for event in events:
            self._chunk("data: " + json.dumps(event) + "\n\n")
        self._chunk("data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, text):
        data = text.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


class MockUpstream:
    """The mock on an ephemeral port of 127.0.0.1, served on a thread."""

    def __init__(self):
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.lock = threading.Lock()
        self._server.received = []
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self._server.server_address[1]

    def received(self):
        with self._server.lock:
            return list(self._server.received)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv):
    """mock_upstream.py [--expect REGEX] -- COMMAND...: runs COMMAND with the
    mock up. With --expect, COMMAND must also exit 0 and print something
    matching REGEX (searched across lines)."""
    if "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 2
    options = argv[1:argv.index("--")]
    command = argv[argv.index("--") + 1:]
    expect = options[options.index("--expect") + 1] if "--expect" in options else None
    with MockUpstream() as mock:
        command = [arg.replace("{mock}", mock.url) for arg in command]
        if expect is None:
            return subprocess.call(command)
        run = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, check=False)
    sys.stdout.write(run.stdout)
    if run.returncode != 0:
        print("mock_upstream: %s exited with %d" % (command[0], run.returncode))
        return 1
    if not re.search(expect, run.stdout, re.S):
        print("mock_upstream: output does not match %r" % expect)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
