"""embed.docs.getting_started: runs every ```sh block of docs/getting-started.md.

The guide's `console` blocks build and start things (./scripts/demo.sh,
./scripts/test.sh); instead of those, this test starts the freshly built
binary as `switchboard serve --demo --listen 127.0.0.1:0` with the admin
token the guide exports, in a temporary directory. Then each `sh` block runs
in bash (`set -euo pipefail`), in order, with the one change that the
guide's 127.0.0.1:8080 becomes the server's real address. A block must exit
0; the blocks whose output the guide describes are checked against it.

  docs_test.py --binary build/ci/server/switchboard --doc docs/getting-started.md
"""

import argparse
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# What the guide says a block prints, keyed by a line of the block.
EXPECTATIONS = {
    "/healthz": [r'"status":"ok"'],
    '"stream":true': [r"data: \{", r"data: \[DONE\]"],
    "for i in 1 2 3 4 5 6": [r"^x-switchboard-backend: demo-fallback",
                             r"^x-switchboard-attempts: 2",
                             r"^x-switchboard-backend: demo-primary"],
    "/admin/cooldowns": [r'"backend":"demo-primary"', r'"upstream_status":429'],
    "/admin/usage": [r'"trace":\[\{"backend":"demo-'],
    '"name":"openai-main"': [r'"api_key_set":true', r'"api_key_hint":"...0000"'],
    "/v1/models": [r'"id":"gpt-4o"'],
    '/admin/backends -H "Authorization: Bearer demo-admin-token"\n': [
        r'"name":"demo-primary"', r'"name":"openai-main"'],
    "-X DELETE": [r"^204$"],
    "/metrics": [r"^switchboard_requests_total\{"],
}
SECRET = "sk-your-key-0000"


def blocks(text, lang):
    return re.findall(r"^```" + lang + r"\n(.*?)^```", text, re.S | re.M)


def start_server(binary, token, work):
    env = dict(os.environ, SWITCHBOARD_ADMIN_TOKEN=token)
    for name in ("SWITCHBOARD_CLIENT_KEYS", "SWITCHBOARD_LISTEN", "SWITCHBOARD_DB",
                 "SWITCHBOARD_MASTER_KEY", "SWITCHBOARD_STORE"):
        env.pop(name, None)
    server = subprocess.Popen([binary, "serve", "--demo", "--listen", "127.0.0.1:0"], cwd=work,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    seen = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([server.stdout], [], [], 1.0)
        if not ready:
            if server.poll() is not None:
                break
            continue
        line = server.stdout.readline()
        if not line:
            break
        seen += line
        found = re.search(rb"switchboard listening on http://([0-9.]+:[0-9]+)", line)
        if found:
            return server, found.group(1).decode()
    server.kill()
    server.wait()
    raise SystemExit("the server did not start:\n" + seen.decode(errors="replace"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--doc", required=True)
    args = parser.parse_args()
    with open(args.doc) as f:
        doc = f.read()

    consoles = blocks(doc, "console")
    if not any("./scripts/demo.sh" in b for b in consoles):
        raise SystemExit("the guide no longer starts the demo with ./scripts/demo.sh")
    token_match = re.search(r"SWITCHBOARD_ADMIN_TOKEN=(\S+)", "".join(consoles))
    if not token_match:
        raise SystemExit("the guide does not set SWITCHBOARD_ADMIN_TOKEN before starting")
    snippets = blocks(doc, "sh")
    if len(snippets) < 5:
        raise SystemExit("expected the guide's sh blocks, found %d" % len(snippets))

    work = tempfile.mkdtemp(prefix="switchboard-docs-")
    server, address = start_server(args.binary, token_match.group(1), work)
    failures = []
    checked = set()
    try:
        for number, snippet in enumerate(snippets, 1):
            script = snippet.replace("127.0.0.1:8080", address)
            run = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=work,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 timeout=60, check=False)
            print("--- block %d (exit %d)\n%s\n%s" % (number, run.returncode, snippet.strip(),
                                                     run.stdout))
            if run.returncode != 0:
                failures.append("block %d exited with %d" % (number, run.returncode))
                continue
            if SECRET in run.stdout:
                failures.append("block %d printed the API key" % number)
            for key, patterns in EXPECTATIONS.items():
                if key not in snippet or key in checked:
                    continue
                checked.add(key)
                for pattern in patterns:
                    if not re.search(pattern, run.stdout, re.M | re.I):
                        failures.append("block %d: no match for %r" % (number, pattern))
        missing = set(EXPECTATIONS) - checked
        if missing:
            failures.append("the guide lost the blocks for: %s" % sorted(missing))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        print("\n".join(failures))
        return 1
    print("docs_test: all %d sh blocks of %s ran as described" % (len(snippets), args.doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
