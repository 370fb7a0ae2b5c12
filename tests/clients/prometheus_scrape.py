#!/usr/bin/python3
"""A real Prometheus server (Debian `prometheus`) scrapes tokenwheeld's GET /metrics.

  /usr/bin/python3 tests/clients/prometheus_scrape.py --tokenwheeld PATH [--prometheus PATH]

Starts tokenwheeld (free loopback ports, a temp data dir), creates an activity and issues tasks
on it through the gateway, then starts Prometheus on 127.0.0.1 (a free port, its own temp TSDB)
with one scrape job for the gateway every second, and asks Prometheus's HTTP API for what it
scraped: the target up, the engine's live tasks and queued tasks per activity equal to what was
issued, a commit-latency histogram and a WAL-sync histogram with observations, the engine's
queue bound, the gateway's request counter for IssueTask. Both servers are stopped by PID on every exit path. Exit 0 iff every check held.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402

TASKS = 3
SCRAPE_BOUND_S = 90  # Prometheus start plus a few scrapes, on a loaded machine under ASan
STOP_BOUND_S = 30


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    def __init__(self, binary, tmp, target):
        self.port = free_port()
        self.tmp = tmp
        config = os.path.join(tmp, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: tokenwheel\n    metrics_path: /metrics\n"
                    f"    static_configs:\n      - targets: ['{target}']\n")
        self.log_path = os.path.join(tmp, "prometheus.log")
        args = [binary, f"--config.file={config}",
                f"--storage.tsdb.path={os.path.join(tmp, 'tsdb')}",
                f"--web.listen-address=127.0.0.1:{self.port}"]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         preexec_fn=h._die_with_parent)
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def query(self, expr):
        """The instant vector of `expr` as [(labels, float)], [] while Prometheus is not up."""
        url = (f"http://127.0.0.1:{self.port}/api/v1/query?"
               + urllib.parse.urlencode({"query": expr}))
        try:
            with self._opener.open(url, timeout=10) as r:
                doc = json.loads(r.read().decode())
        except OSError:
            return []
        if doc.get("status") != "success":
            return []
        return [(s["metric"], float(s["value"][1])) for s in doc["data"]["result"]]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_BOUND_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, lines=20):
        with open(self.log_path, "rb") as f:
            return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])


def wait_for(prom, expr, accept, what):
    """Polls `expr` until `accept(samples)` holds (bounded); returns the samples."""
    deadline = time.monotonic() + SCRAPE_BOUND_S
    samples = []
    while time.monotonic() < deadline:
        samples = prom.query(expr)
        if samples and accept(samples):
            return samples
        if prom.proc.poll() is not None:
            raise RuntimeError("prometheus exited:\n" + prom.log_tail())
        time.sleep(0.25)
    raise AssertionError(f"{what}: {expr} gave {samples} after {SCRAPE_BOUND_S} s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenwheeld", required=True)
    ap.add_argument("--prometheus", default=shutil.which("prometheus") or "/usr/bin/prometheus")
    a = ap.parse_args()
    if not os.access(a.prometheus, os.X_OK):
        print(f"prometheus not found at {a.prometheus} (tools/install-deps.sh installs it)",
              file=sys.stderr)
        return 1
    tmp = h.temp_dir("tw-prometheus-")
    server = h.Server(a.tokenwheeld, os.path.join(tmp, "data"), os.path.join(tmp, "server.log"))
    prom = None
    try:
        server.start()
        api = h.JsonApi(server.endpoint)
        arn = api.aws("CreateActivity", name="scraped")["activityArn"]
        for i in range(TASKS):
            api.issue(activity_arn=arn, input_obj={"n": i})
        prom = Prometheus(a.prometheus, tmp, server.aws_address)
        wait_for(prom, 'up{job="tokenwheel"}', lambda s: s[0][1] == 1.0, "target up")
        wait_for(prom, "tokenwheel_live_tasks", lambda s: s[0][1] == TASKS, "live tasks")
        queued = wait_for(prom, "tokenwheel_queued_tasks", lambda s: True, "queued tasks")
        assert [(m.get("activity"), v) for m, v in queued] == [(arn, float(TASKS))], queued
        wait_for(prom, "tokenwheel_engine_commit_seconds_count", lambda s: s[0][1] > 0,
                 "commit latency histogram")
        # Every synced issue waited for a WAL sync, timed at the file system under RocksDB.
        wait_for(prom, "tokenwheel_wal_sync_seconds_count", lambda s: s[0][1] >= TASKS,
                 "WAL sync histogram")
        wait_for(prom, "tokenwheel_engine_queue_capacity", lambda s: s[0][1] > 0,
                 "engine queue bound")
        wait_for(prom, 'tokenwheel_gateway_requests_total{operation="IssueTask",code=""}',
                 lambda s: s[0][1] == TASKS, "IssueTask requests")
        print(f"prometheus_scrape: ok (prometheus on 127.0.0.1:{prom.port} scraped "
              f"{server.aws_address})", file=sys.stderr)
        return 0
    except Exception as e:  # noqa: BLE001 - any failure is reported with both logs
        print(f"prometheus_scrape: FAILED: {e}\n--- tokenwheeld:\n{server.log_tail()}",
              file=sys.stderr)
        if prom is not None:
            print(f"--- prometheus:\n{prom.log_tail()}", file=sys.stderr)
        return 1
    finally:
        if prom is not None:
            prom.stop()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
