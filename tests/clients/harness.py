"""Shared pieces of the real-client tests (tests/clients/run_clients.py).

- Server: one tokenwheeld on 127.0.0.1, free ports, a temp data dir; stopped by PID (SIGTERM,
  then SIGKILL after a bound) on every exit path, and killed by the kernel if this process dies
  first (PR_SET_PDEATHSIG).
- JsonApi: the gateway's JSON 1.0 operations (AWSStepFunctions.* and TokenWheel.*) with only the
  standard library plus botocore's SigV4 signer, unsigned when the server has no credentials.
- Cases: named checks with timings; a failed check names the case, what was expected and what
  came back.

Standard library and botocore only (Debian python3-botocore), run with /usr/bin/python3.
"""

import contextlib
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

# Obviously fake keys: the credentials file the auth server loads, and what clients sign with.
TEST_KEY_ID = "AKIDTOKENWHEELTEST01"
TEST_SECRET = "tokenwheel-test-secret-not-a-real-key"
WRONG_SECRET = "tokenwheel-wrong-secret-not-a-real-key"
UNKNOWN_KEY_ID = "AKIDTOKENWHEELUNKNOWN"
REGION = "us-east-1"
ACCOUNT = "000000000000"
ARN_PREFIX = f"arn:aws:states:{REGION}:{ACCOUNT}:activity:"

# SEMANTICS.md, "Exact AWS texts" and "Authentication errors".
MSG_INVALID_TOKEN = "Invalid Token: 'Invalid token'"
MSG_TASK_GONE = "Task Timed Out: 'Provided task does not exist anymore'"
MSG_TASK_DOES_NOT_EXIST = "Task Does Not Exist: 'Provided task does not exist'"
MSG_BAD_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. Check your "
    "AWS Secret Access Key and signing method. Consult the service documentation for details.")
MSG_UNKNOWN_KEY = "The security token included in the request is invalid."
MSG_MISSING_AUTH = "Missing Authentication Token"
PAYLOAD_BYTES_MAX = 262144
# The reason after "Invalid Output: '" is the server's own (where the JSON broke).
INVALID_JSON_OUTPUT = re.compile(r"Invalid Output: 'Invalid JSON.*'")


def invalid_name(name):
    return f"Invalid Name: '{name}'"


def invalid_arn(arn):
    return f"Invalid Arn: 'Invalid ARN prefix: {arn}'"


def activity_does_not_exist(arn):
    return f"Activity Does Not Exist: '{arn}'"


def too_long(field, n):
    return (f"1 validation error detected: Value at '{field}' failed to satisfy constraint: "
            f"Member must have length less than or equal to {n}")


def must_not_be_null(*fields):
    parts = [f"Value at '{f}' failed to satisfy constraint: Member must not be null"
             for f in fields]
    head = "1 validation error detected: " if len(parts) == 1 else \
        f"{len(parts)} validation errors detected: "
    return head + "; ".join(parts)


def json_string_of_bytes(n):
    """A JSON string value exactly n bytes long (n >= 2)."""
    return '"' + "x" * (n - 2) + '"'


# ---- the server ----

_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    # Runs in the child between fork and exec: the server gets SIGKILL if the runner dies
    # (ctest's timeout kills the runner, not its children).
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Server:
    """One tokenwheeld. `aws_port` 0 picks a free port; a restart reuses the bound port."""

    START_BOUND_S = 60  # the ASan build opens RocksDB slowly
    STOP_BOUND_S = 30

    def __init__(self, binary, data_dir, log_path, credentials_file=None, max_poll_seconds=1,
                 extra_args=()):
        self.binary = binary
        self.data_dir = data_dir
        self.log_path = log_path
        self.credentials_file = credentials_file
        self.max_poll_seconds = max_poll_seconds
        self.extra_args = list(extra_args)
        self.proc = None
        self.aws_address = None  # "127.0.0.1:PORT"
        self.starts = 0

    @property
    def endpoint(self):
        return f"http://{self.aws_address}"

    def start(self, aws_port=0):
        assert self.proc is None
        self.starts += 1
        args = [self.binary, "--data-dir", self.data_dir, "--rpc-listen", "127.0.0.1:0",
                "--aws-listen", f"127.0.0.1:{aws_port}",
                "--max-poll-seconds", str(self.max_poll_seconds)]
        if self.credentials_file:
            args += ["--aws-credentials", self.credentials_file]
        args += self.extra_args
        log = open(self.log_path, "ab")
        log.write(f"---- start {self.starts}: {' '.join(args)}\n".encode())
        log.flush()
        offset = log.tell()
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     preexec_fn=_die_with_parent)
        log.close()
        deadline = time.monotonic() + self.START_BOUND_S
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
            m = re.search(r" started, .* aws_listen=(\S+)", text)
            if m:
                self.aws_address = m.group(1)
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"tokenwheeld exited with {self.proc.returncode} at start:\n"
                                   + text)
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"tokenwheeld did not log its start within {self.START_BOUND_S} s")

    def restart(self):
        """Stops the server (SIGTERM) and starts it again on the same data dir and port."""
        port = int(self.aws_address.rsplit(":", 1)[1])
        rc = self.stop()
        if rc != 0:
            raise RuntimeError(f"tokenwheeld exited with {rc} on SIGTERM")
        return self.start(aws_port=port)

    def stop(self):
        """SIGTERM, then SIGKILL after STOP_BOUND_S. Returns the exit status (None if not up)."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.STOP_BOUND_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def log_tail(self, lines=30):
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def write_credentials(path, keys):
    """The --aws-credentials file: [{"accessKeyId", "secretAccessKey"}], mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump([{"accessKeyId": k, "secretAccessKey": s} for k, s in keys], f)
    os.chmod(path, 0o600)


def copy_token_key(from_data_dir, to_data_dir):
    """A fresh data dir sharing `from`'s token MAC key: its tokens are well formed there, but
    their tasks unknown (TaskDoesNotExist)."""
    os.makedirs(to_data_dir, mode=0o700, exist_ok=True)
    with open(os.path.join(from_data_dir, "token.key"), "rb") as f:
        key = f.read()
    fd = os.open(os.path.join(to_data_dir, "token.key"), os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)


def client_env(endpoint=None, key_id=TEST_KEY_ID, secret=TEST_SECRET, home=None):
    """An environment for a client process: our dummy keys, no config or credential files, no
    proxy, no instance metadata lookups, nothing from the caller's AWS_* variables."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and k.lower() not in
           ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    env.update({
        "AWS_ACCESS_KEY_ID": key_id,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_PAGER": "",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    })
    if home:
        env["HOME"] = home
    if endpoint:
        env["TW_ENDPOINT"] = endpoint
    return env


# ---- the JSON 1.0 API, standard library + botocore's signer ----

class ApiError(Exception):
    def __init__(self, status, code, message, body):
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body


class JsonApi:
    """POSTs JSON 1.0 requests to the gateway. Signed with SigV4 (service "states") when
    `credentials` (key id, secret) is given, else unsigned."""

    def __init__(self, endpoint, credentials=None, region=REGION, timeout_s=90):
        self.endpoint = endpoint.rstrip("/") + "/"
        self.credentials = credentials
        self.region = region
        self.timeout_s = timeout_s
        # No proxy, whatever the environment says: the server is on loopback.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def raw(self, target, body, sign=True, signing_time=None, tamper=None):
        """Sends `body` (bytes, or an object to dump) with X-Amz-Target `target`. Returns
        (status, headers, text). `signing_time`: a datetime to sign with (expired signatures);
        `tamper(headers, data) -> (headers, data)`: changes the request after signing."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": target}
        if sign and self.credentials:
            headers = self._sign(data, headers, signing_time)
        if tamper:
            headers, data = tamper(dict(headers), data)
        req = urllib.request.Request(self.endpoint, data=data, headers=headers, method="POST")
        try:
            with self._opener.open(req, timeout=self.timeout_s) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def _sign(self, data, headers, signing_time):
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
        request = AWSRequest(method="POST", url=self.endpoint, data=data, headers=headers)
        signer = SigV4Auth(Credentials(*self.credentials), "states", self.region)
        if signing_time is None:
            signer.add_auth(request)
        else:
            import types
            import botocore.auth as auth_module
            real = auth_module.datetime

            class FixedClock(real.datetime):
                @classmethod
                def utcnow(cls):
                    return signing_time

            # botocore.auth's own name for the datetime module, for this one signature.
            auth_module.datetime = types.SimpleNamespace(datetime=FixedClock)
            try:
                signer.add_auth(request)
            finally:
                auth_module.datetime = real
        return dict(request.headers.items())

    def call(self, target, body=None, **kw):
        """A parsed answer, or ApiError with the code as botocore reads it (after '#')."""
        status, headers, text = self.raw(target, body if body is not None else {}, **kw)
        doc = json.loads(text) if text else {}
        if status == 200:
            return doc
        code = doc.get("__type", "").rsplit("#", 1)[-1]
        raise ApiError(status, code, doc.get("message", doc.get("Message", "")), text)

    # AWSStepFunctions.*
    def aws(self, op, **body):
        return self.call("AWSStepFunctions." + op, body)

    # TokenWheel.*
    def tw(self, op, **body):
        return self.call("TokenWheel." + op, body)

    def issue(self, activity_arn=None, input_obj=None, **kw):
        body = dict(kw)
        if activity_arn:
            body["activityArn"] = activity_arn
        if input_obj is not None:
            body["input"] = json.dumps(input_obj)
        return self.tw("IssueTask", **body)["taskToken"]

    def metric_requests(self, op, code=""):
        """tokenwheel_gateway_requests_total{operation=op,code=code} from GET /metrics."""
        with self._opener.open(self.endpoint + "metrics", timeout=self.timeout_s) as r:
            text = r.read().decode()
        m = re.search(r'^tokenwheel_gateway_requests_total\{operation="%s",code="%s"\} (\d+)$'
                      % (re.escape(op), re.escape(code)), text, re.M)
        return int(m.group(1)) if m else 0

    def describe(self, token):
        return self.tw("DescribeTask", taskToken=token)

    def wait_state(self, token, state, bound_s=15):
        """Polls DescribeTask until `state` (bounded): for timeouts that need real time."""
        deadline = time.monotonic() + bound_s
        while True:
            d = self.describe(token)
            if d["state"] == state:
                return d
            if time.monotonic() > deadline:
                raise AssertionError(f"task not {state} within {bound_s} s: {d}")
            time.sleep(0.05)


# ---- checks ----

class CheckFailed(AssertionError):
    pass


def expect(cond, what):
    if not cond:
        raise CheckFailed(what)


def expect_message(actual, expected):
    """`expected`: the exact text, or a compiled pattern the whole text must match."""
    if isinstance(expected, re.Pattern):
        expect(expected.fullmatch(actual or "") is not None,
               f"message:\n  expected to match: {expected.pattern!r}\n  actual: {actual!r}")
    else:
        expect_eq(actual, expected, "message")


def expect_eq(actual, expected, what):
    if actual != expected:
        raise CheckFailed(f"{what}:\n  expected: {expected!r}\n  actual:   {actual!r}")


@contextlib.contextmanager
def expect_api_error(code, message, status=400):
    """For the raw JSON client: the block must raise ApiError(code, message)."""
    try:
        yield
    except ApiError as e:
        expect_eq((e.status, e.code), (status, code), f"error {e.message!r}")
        expect_message(e.message, message)
        return
    raise CheckFailed(f"expected {code}: {message!r}, the call succeeded")


class Cases:
    """Runs named cases in order; reports each with its time; a failure does not stop the rest
    unless `fatal`."""

    def __init__(self, suite):
        self.suite = suite
        self.results = []  # (name, ok, seconds, detail)

    def run(self, name, fn, fatal=False):
        t0 = time.monotonic()
        try:
            fn()
            ok, detail = True, ""
        except Exception as e:  # noqa: BLE001 -- every failure is reported, then counted
            ok = False
            detail = "".join(traceback.format_exception_only(type(e), e)).strip()
            if not isinstance(e, CheckFailed):
                detail += "\n" + "".join(traceback.format_tb(e.__traceback__)[-3:])
        dt = time.monotonic() - t0
        self.results.append((name, ok, dt, detail))
        print(f"[{self.suite}] {'PASS' if ok else 'FAIL'} {name} ({dt:.2f} s)", flush=True)
        if not ok:
            print("    " + detail.replace("\n", "\n    "), flush=True)
            if fatal:
                raise CheckFailed(f"{name} failed; the rest depends on it")
        return ok

    def record(self, name, ok, seconds, detail=""):
        """A case run elsewhere (the JavaScript suite reports its own)."""
        self.results.append((name, ok, seconds, detail))

    @property
    def failed(self):
        return [r for r in self.results if not r[1]]


def temp_dir(prefix):
    return tempfile.mkdtemp(prefix=prefix)


def log(msg):
    print(msg, file=sys.stderr, flush=True)
