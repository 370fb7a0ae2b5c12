#!/usr/bin/python3
"""A real browser (Debian `chromium`, headless) renders the gateway's status page (GET /).

  /usr/bin/python3 tests/clients/status_page_chromium.py --tokenwheeld PATH [--chromium PATH]
      [--screenshot-out FILE] [--live-seconds N]

Starts tokenwheeld (free loopback ports, a temp data dir), creates two activities, issues tasks
on them and a callback task, and has a worker take one task, all through the gateway's JSON
protocol. Reads GET /status.json and checks its figures equal what was created. Then runs
`chromium --headless --dump-dom` on http://127.0.0.1:PORT/ with a virtual-time budget long
enough for the page's script to poll status.json a few times, and checks the rendered DOM: the
script ran and found the storage ok, each activity's row shows its name, queued and started
counts, the live / queued / started cards show the API's figures, and the throughput chart has
a series.
Last, a `--screenshot` of the page (a PNG of the window's size, in the temp dir; copied to
--screenshot-out if given). docs/status-page.png is made with --live-seconds 90: then the
screenshot is taken over DevTools after 90 s of real time with background traffic (tasks issued,
taken, completed, some timing out), so the chart has data.

Chromium talks to nothing but 127.0.0.1: its own temp profile and HOME, no proxy, background
networking, sync, component updates, crash reports and the like off, and every host name but
127.0.0.1 resolving to nothing. Each chromium runs in its own process group, killed by that PID
(SIGKILL to the group: chromium's helpers too) on every exit path; tokenwheeld is stopped by
PID (tests/clients/harness.py). Exit 0 iff every check held.
"""

import argparse
import base64
import fcntl
import html
import json
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402

ACTIVITIES = {"payments": 3, "emails": 2}  # name -> tasks issued on it
TAKEN = "payments"  # a worker takes one of its tasks: STARTED
CHROMIUM_BOUND_S = 120  # one headless run, on a loaded machine
VIRTUAL_TIME_MS = 6000  # the page polls every second: about six polls
WINDOW = (1100, 720)

# Nothing leaves the machine: no first-run, sync, component or safe-browsing traffic, no proxy,
# and every name but 127.0.0.1 resolves to nothing.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu",
    "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
    "--disable-sync", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
    "--disable-breakpad", "--disable-crash-reporter", "--disable-domain-reliability",
    "--disable-client-side-phishing-detection", "--no-pings", "--metrics-recording-only",
    "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,"
    "AutofillServerCommunication,CertificateTransparencyComponentUpdater",
    "--no-proxy-server", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--password-store=basic", "--use-mock-keychain", "--mute-audio", "--hide-scrollbars",
]


def chromium_env(home):
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    env.update({"HOME": home, "XDG_CONFIG_HOME": os.path.join(home, ".config"),
                "XDG_CACHE_HOME": os.path.join(home, ".cache")})
    return env


def run_chromium(binary, tmp, name, args):
    """Runs one headless chromium to its end (bounded); returns its stdout. Its process group
    is killed on every path out of here, so no helper outlives the run."""
    home = os.path.join(tmp, f"home-{name}")
    os.makedirs(home)
    cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={os.path.join(tmp, 'profile-' + name)}",
           *args]
    err_path = os.path.join(tmp, f"chromium-{name}.log")
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                env=chromium_env(home), start_new_session=True,
                                preexec_fn=h._die_with_parent)
    try:
        out, _ = proc.communicate(timeout=CHROMIUM_BOUND_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"chromium ({name}) did not finish within {CHROMIUM_BOUND_S} s")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own group: start_new_session
        except ProcessLookupError:
            pass
        proc.wait()
    if proc.returncode != 0:
        with open(err_path, "rb") as f:
            tail = f.read().decode(errors="replace")[-2000:]
        raise AssertionError(f"chromium ({name}) exited with {proc.returncode}:\n{tail}")
    return out.decode(errors="replace")


def screenshot_after(binary, tmp, url, seconds, out_path):
    """For the docs: the page in real time (virtual time would squeeze the chart's minutes into
    a moment of the server's clock). Chromium is driven over --remote-debugging-pipe (DevTools
    messages on fds 3 and 4, no port): open `url`, let the page poll for `seconds`, capture."""
    home = os.path.join(tmp, "home-live")
    os.makedirs(home)
    pipe_r, to_chrome_w = os.pipe()
    from_chrome_r, pipe_w = os.pipe()
    # The child's ends, out of the way of 3 and 4, which their copies take in the child.
    to_chrome_r = fcntl.fcntl(pipe_r, fcntl.F_DUPFD_CLOEXEC, 10)
    from_chrome_w = fcntl.fcntl(pipe_w, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(pipe_r)
    os.close(pipe_w)

    def child_setup():
        h._die_with_parent()
        os.dup2(to_chrome_r, 3, inheritable=True)
        os.dup2(from_chrome_w, 4, inheritable=True)

    cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={os.path.join(tmp, 'profile-live')}",
           "--remote-debugging-pipe", f"--window-size={WINDOW[0]},{WINDOW[1]}"]
    with open(os.path.join(tmp, "chromium-live.log"), "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                env=chromium_env(home), start_new_session=True,
                                preexec_fn=child_setup, pass_fds=(3, 4))
    inbox = b""
    ids = iter(range(1, 1000))

    def call(method, session=None, **params):
        nonlocal inbox
        msg_id = next(ids)
        msg = {"id": msg_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(to_chrome_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + CHROMIUM_BOUND_S
        while time.monotonic() < deadline:
            while b"\0" in inbox:
                raw, inbox = inbox.split(b"\0", 1)
                answer = json.loads(raw)
                if answer.get("id") == msg_id:
                    assert "error" not in answer, f"{method}: {answer['error']}"
                    return answer["result"]
            ready, _, _ = select.select([from_chrome_r], [], [], 1)
            if ready:
                chunk = os.read(from_chrome_r, 1 << 20)
                assert chunk, "chromium closed its DevTools pipe"
                inbox += chunk
        raise AssertionError(f"chromium did not answer {method}")

    try:
        for fd in (to_chrome_r, from_chrome_w):  # the child's ends: EOF when chromium exits
            os.close(fd)
        target = call("Target.createTarget", url="about:blank")["targetId"]
        session = call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        call("Emulation.setDeviceMetricsOverride", session, width=WINDOW[0], height=WINDOW[1],
             deviceScaleFactor=1, mobile=False)
        call("Page.navigate", session, url=url)
        time.sleep(seconds)  # the page polls in real time meanwhile: the chart's data
        shot = call("Page.captureScreenshot", session, format="png")["data"]
        with open(out_path, "wb") as f:
            f.write(base64.b64decode(shot))
    finally:
        os.close(to_chrome_w)
        os.close(from_chrome_r)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own group: start_new_session
        except ProcessLookupError:
            pass
        proc.wait()


def get_json(url):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=30) as r:
        assert r.headers.get("Content-Type") == "application/json", r.headers
        return json.loads(r.read().decode())


def element_text(dom, element_id):
    m = re.search(r'id="%s"[^>]*>([^<]*)<' % re.escape(element_id), dom)
    assert m, f"no element #{element_id} in the DOM"
    return html.unescape(m.group(1))


def check_dom(dom, status, arns):
    m = re.search(r'<body[^>]*data-state="([^"]*)"[^>]*data-polls="(\d+)"', dom)
    assert m, "no <body data-state data-polls> in the DOM:\n" + dom[:2000]
    state, polls = m.group(1), int(m.group(2))
    assert state == "ok", f"the page's state is {state!r}, not 'ok'"
    assert polls >= 3, f"the page polled {polls} times within {VIRTUAL_TIME_MS} ms virtual time"
    for card, key in (("live-tasks", "liveTasks"), ("queued-tasks", "queuedTasks"),
                      ("started-tasks", "startedTasks")):
        got = element_text(dom, card)
        assert got == str(status[key]), f"#{card} shows {got!r}, the API says {status[key]}"
    for name, arn in arns.items():
        expected = ACTIVITIES[name] - (1 if name == TAKEN else 0)
        row = re.search(r'<tr data-arn="%s">(.*?)</tr>' % re.escape(arn), dom)
        assert row, f"no row for {arn} in the activities table"
        cells = dict(re.findall(r'<td class="(\w+)">([^<]*)</td>', row.group(1)))
        assert cells.get("name") == name, f"row of {arn}: {cells}"
        assert cells.get("queued") == str(expected), f"row of {arn}: {cells}, want {expected}"
        started = 1 if name == TAKEN else 0
        assert cells.get("started") == str(started), f"row of {arn}: {cells}, want {started}"
    chart = re.search(r'<svg id="chart-throughput".*?</svg>', dom, re.S)
    assert chart and 'class="series"' in chart.group(0), "the throughput chart has no series"
    for ref in re.findall(r'\b(?:src|href)="([^"]*)"', dom):
        assert ref.startswith("data:"), f"the rendered page references {ref}"


def check_png(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    assert (width, height) == WINDOW, f"screenshot is {width}x{height}, want {WINDOW}"
    return os.path.getsize(path)


def background_load(api, arn, stop):
    """Issues, takes and completes tasks, and lets some callback tasks time out, until `stop`:
    the chart of a screenshot for the docs then shows throughput and timeouts."""
    n = 0
    while not stop.is_set():
        api.issue(activity_arn=arn, input_obj={"n": n})
        task = api.aws("GetActivityTask", activityArn=arn)
        if "taskToken" in task:
            api.aws("SendTaskSuccess", taskToken=task["taskToken"], output="{}")
        if n % 50 == 0:
            api.issue(input_obj={"n": n}, timeoutSeconds=1)
        n += 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenwheeld", required=True)
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--screenshot-out", help="also copy the screenshot here")
    ap.add_argument("--live-seconds", type=float, default=0,
                    help="screenshot after this long in real time, with background traffic")
    a = ap.parse_args()
    if not os.access(a.chromium, os.X_OK):
        print(f"chromium not found at {a.chromium} (tools/install-deps.sh installs it)",
              file=sys.stderr)
        return 1
    tmp = h.temp_dir("tw-status-page-")
    server = h.Server(a.tokenwheeld, os.path.join(tmp, "data"), os.path.join(tmp, "server.log"))
    stop_load = threading.Event()
    load = None
    try:
        server.start()
        api = h.JsonApi(server.endpoint)
        arns = {}
        for name, tasks in ACTIVITIES.items():
            arns[name] = api.aws("CreateActivity", name=name)["activityArn"]
            for i in range(tasks):
                api.issue(activity_arn=arns[name], input_obj={"n": i})
        api.issue(input_obj={"callback": True}, timeoutSeconds=3600)
        assert "taskToken" in api.aws("GetActivityTask", activityArn=arns[TAKEN])

        status = get_json(server.endpoint + "/status.json")
        live = sum(ACTIVITIES.values()) + 1
        assert status["liveTasks"] == live, status
        assert status["queuedTasks"] == live - 2, status
        assert status["startedTasks"] == 2, status  # the taken task and the callback task
        assert {x["name"]: x["queued"] for x in status["activities"]} == \
            {n: c - (1 if n == TAKEN else 0) for n, c in ACTIVITIES.items()}, status
        assert {x["name"]: x["arn"] for x in status["activities"]} == arns, status
        assert {x["name"]: x["started"] for x in status["activities"]} == \
            {n: 1 if n == TAKEN else 0 for n in ACTIVITIES}, status

        url = f"http://{server.aws_address}/"
        dom = run_chromium(a.chromium, tmp, "dom",
                           [f"--virtual-time-budget={VIRTUAL_TIME_MS}", "--dump-dom", url])
        check_dom(dom, status, arns)

        shot = os.path.join(tmp, "status-page.png")
        if a.live_seconds > 0:
            load_arn = api.aws("CreateActivity", name="thumbnails")["activityArn"]
            load = threading.Thread(target=background_load,
                                    args=(h.JsonApi(server.endpoint), load_arn, stop_load))
            load.start()
            screenshot_after(a.chromium, tmp, url, a.live_seconds, shot)
        else:
            run_chromium(a.chromium, tmp, "screenshot",
                         [f"--virtual-time-budget={VIRTUAL_TIME_MS}", f"--screenshot={shot}",
                          f"--window-size={WINDOW[0]},{WINDOW[1]}", url])
        size = check_png(shot)
        if a.screenshot_out:
            shutil.copyfile(shot, a.screenshot_out)
        print(f"status_page_chromium: ok (chromium rendered {url}; screenshot {size} bytes)",
              file=sys.stderr)
        return 0
    except Exception as e:  # noqa: BLE001 - any failure is reported with the server's log
        print(f"status_page_chromium: FAILED: {e}\n--- tokenwheeld:\n{server.log_tail()}",
              file=sys.stderr)
        return 1
    finally:
        stop_load.set()
        if load is not None:
            load.join(timeout=60)
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
