#!/usr/bin/python3
"""Real AWS clients against tokenwheeld's AWS JSON 1.0 gateway.

  /usr/bin/python3 tests/clients/run_clients.py --client CLIENT --tokenwheeld PATH

CLIENT is one of
  awscli    the AWS CLI (Debian awscli, /usr/bin/aws) as a worker, from a shell-like driver
  boto3     boto3 (Debian python3-boto3) as a worker
  js        the AWS SDK for JavaScript v3 (@aws-sdk/client-sfn, tests/clients/js) as a worker
  issuer    a workflow-engine loop over TokenWheel.* (standard library + botocore's signer),
            across a server restart
  examples  the programs in examples/ (each worker, and the issuer) against one server

Each run starts its own servers on 127.0.0.1 with free ports and temp data dirs: one without
credentials (the normal worker loop) and one with --aws-credentials (the signed loop and the
authentication errors), whose data dir shares the first one's token key (so a token of the first
is well formed there but unknown: TaskDoesNotExist). Servers are stopped by PID on every exit
path. Exit status 0 iff every case passed; ctest registers one test per client
(tests/CMakeLists.txt, label "clients").
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CLIENTS = ("awscli", "boto3", "js", "issuer", "examples")


class Context:
    """What a suite gets: the two servers, a raw JSON client for each, and a foreign token."""

    def __init__(self, tokenwheeld, tmp):
        self.tokenwheeld = tokenwheeld
        self.tmp = tmp
        self.repo = REPO
        self.open = None  # no --aws-credentials
        self.auth = None  # --aws-credentials: TEST_KEY_ID / TEST_SECRET
        self.api_open = None
        self.api_auth = None
        self.foreign_token = None  # issued on `open`; well formed but unknown on `auth`
        self.servers = []

    def start(self):
        open_dir = os.path.join(self.tmp, "open-data")
        self.open = self._server(open_dir, "open.log").start()
        self.api_open = h.JsonApi(self.open.endpoint)
        auth_dir = os.path.join(self.tmp, "auth-data")
        h.copy_token_key(open_dir, auth_dir)
        creds = os.path.join(self.tmp, "credentials.json")
        h.write_credentials(creds, [(h.TEST_KEY_ID, h.TEST_SECRET),
                                    ("AKIDTOKENWHEELOTHER1", "another-test-secret")])
        self.auth = self._server(auth_dir, "auth.log", credentials_file=creds).start()
        self.api_auth = h.JsonApi(self.auth.endpoint, (h.TEST_KEY_ID, h.TEST_SECRET))
        self.foreign_token = self.api_open.issue(None, {"callback": True}, timeoutSeconds=3600)

    def _server(self, data_dir, log_name, credentials_file=None):
        s = h.Server(self.tokenwheeld, data_dir, os.path.join(self.tmp, log_name),
                     credentials_file=credentials_file, max_poll_seconds=1)
        self.servers.append(s)
        return s

    def stop(self):
        """Stops every server; returns the list of (log, exit status) that were not 0."""
        bad = []
        for s in self.servers:
            rc = s.stop()
            if rc not in (None, 0):
                bad.append((s.log_path, rc))
        return bad


def run_js(cases, ctx):
    """The JavaScript suite is its own program (tests/clients/js/suite.mjs); it prints one line
    per case, the same way, and exits non-zero if any failed."""
    js_dir = os.path.join(HERE, "js")
    if not os.path.isdir(os.path.join(js_dir, "node_modules", "@aws-sdk", "client-sfn")):
        raise h.CheckFailed(f"{js_dir}/node_modules is missing: run tools/install-deps.sh "
                            "(npm ci from the lockfile)")
    node = shutil.which("node") or "/usr/bin/node"
    env = h.client_env()
    env.update({
        "TW_OPEN_ENDPOINT": ctx.open.endpoint,
        "TW_AUTH_ENDPOINT": ctx.auth.endpoint,
        "TW_KEY_ID": h.TEST_KEY_ID,
        "TW_SECRET": h.TEST_SECRET,
        "TW_WRONG_SECRET": h.WRONG_SECRET,
        "TW_UNKNOWN_KEY_ID": h.UNKNOWN_KEY_ID,
        "TW_FOREIGN_TOKEN": ctx.foreign_token,
    })
    t0 = time.monotonic()
    proc = subprocess.run([node, os.path.join(js_dir, "suite.mjs")], cwd=js_dir, env=env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=240, text=True)
    seen = 0
    for line in proc.stdout.splitlines():
        print(line, flush=True)
        m = re.match(r"\[js\] (PASS|FAIL) (.*) \((\d+\.\d+) s\)$", line)
        if m:
            seen += 1
            cases.record(m.group(2), m.group(1) == "PASS", float(m.group(3)))
    if proc.returncode != 0 or seen == 0:
        cases.record("node suite.mjs exit status", False, time.monotonic() - t0,
                     f"exit status {proc.returncode}, {seen} cases reported")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--client", required=True, choices=CLIENTS)
    ap.add_argument("--tokenwheeld", required=True, help="the tokenwheeld binary")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    args = ap.parse_args()
    tokenwheeld = os.path.abspath(args.tokenwheeld)
    if not os.access(tokenwheeld, os.X_OK):
        print(f"not an executable: {tokenwheeld}", file=sys.stderr)
        return 2

    # SIGTERM / SIGINT (ctest, Ctrl-C) unwind through the finally below, which stops the
    # servers; SIGKILL is covered by PR_SET_PDEATHSIG in harness.Server.
    def on_signal(signo, _frame):
        raise SystemExit(128 + signo)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    tmp = h.temp_dir(f"tw-clients-{args.client}-")
    ctx = Context(tokenwheeld, tmp)
    cases = h.Cases(args.client)
    t0 = time.monotonic()
    ok = False
    try:
        cases.run("start tokenwheeld (no credentials, and with --aws-credentials)", ctx.start,
                  fatal=True)
        if args.client == "js":
            run_js(cases, ctx)
        else:
            import importlib
            suite = importlib.import_module(f"{args.client}_suite")
            try:
                suite.run(cases, ctx)
            except h.CheckFailed:
                pass  # a fatal case failed: already reported
        ok = not cases.failed
    except h.CheckFailed:
        pass
    finally:
        bad_exits = ctx.stop()
        for log_path, rc in bad_exits:
            print(f"[{args.client}] FAIL tokenwheeld exited with {rc} on SIGTERM ({log_path})")
            ok = False
        if not ok:
            for s in ctx.servers:
                print(f"---- {s.log_path} (last lines)\n{s.log_tail()}")
        if ok and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"[{args.client}] logs and data kept in {tmp}")
    n, failed = len(cases.results), len(cases.failed)
    print(f"[{args.client}] {n - failed}/{n} cases passed in {time.monotonic() - t0:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
