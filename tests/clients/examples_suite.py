"""The programs in examples/, run as a user runs them (only the endpoint, through TW_ENDPOINT,
points at the test's server instead of make run's 127.0.0.1:8083): the issuer issues six tasks
and waits for their outcomes while the three workers (AWS CLI, boto3, Node) take two each.
Then the issuer and the boto3 worker once more against the server with --aws-credentials,
with the keys in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
"""

import os
import re
import shutil
import signal
import subprocess
import time

import harness as h
from harness import expect, expect_eq

BOUND_S = 150  # the whole round; the AWS CLI worker is the slow one (~0.6 s a call)


def start(ctx, name, argv, env, log_dir):
    out = open(os.path.join(log_dir, f"{name}.out"), "w")
    # Its own process group: the shell worker's `aws` children are stopped with it.
    p = subprocess.Popen(argv, cwd=ctx.repo, env=env, stdin=subprocess.DEVNULL, stdout=out,
                         stderr=subprocess.STDOUT, start_new_session=True,
                         preexec_fn=h._die_with_parent)
    out.close()
    p.name = name
    p.out_path = out.name
    return p


def stop_group(p):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)  # the group this test made for it (start_new_session)
            p.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def output(p):
    with open(p.out_path) as f:
        return f.read()


def run_round(ctx, endpoint, tasks, workers, env_extra, log_dir, tag=""):
    """Starts the issuer and `workers` [(name, argv, max_tasks)]; returns their outputs."""
    env = h.client_env(endpoint=endpoint)
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(k)  # the examples' own dummy keys, unless the round gives real ones
    # The test servers run with --max-poll-seconds 1, which bounds GetOutcomes' waitSeconds.
    env.update({"TW_ACTIVITY": "examples-test", "AWS_CLI": "/usr/bin/aws", "TW_WAIT_SECONDS": "1"})
    env.update(env_extra)
    procs = []
    try:
        issuer = start(ctx, "issuer" + tag, ["/usr/bin/python3", "examples/issuer.py"],
                       dict(env, TW_TASKS=str(tasks)), log_dir)
        procs.append(issuer)
        deadline = time.monotonic() + 30
        while "waiting for" not in output(issuer):
            expect(issuer.poll() is None, f"the issuer exited early:\n{output(issuer)}")
            expect(time.monotonic() < deadline, f"the issuer did not issue:\n{output(issuer)}")
            time.sleep(0.05)
        for name, argv, n in workers:
            procs.append(start(ctx, name, argv, dict(env, TW_MAX_TASKS=str(n)), log_dir))
        deadline = time.monotonic() + BOUND_S
        for p in procs:
            try:
                p.wait(timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise h.CheckFailed(f"{p.name} still running after {BOUND_S} s:\n{output(p)}")
        outs = {p.name.removesuffix(tag) if p is issuer else p.name: output(p) for p in procs}
        for p in procs:
            expect_eq(p.returncode, 0, f"{p.name} exit status; its output:\n{output(p)}")
        return outs
    finally:
        for p in procs:
            stop_group(p)


def run(cases, ctx):
    log_dir = os.path.join(ctx.tmp, "examples")
    os.makedirs(log_dir, exist_ok=True)
    node_dir = os.path.join(ctx.repo, "examples", "node")
    node = shutil.which("node") or "/usr/bin/node"

    def defaults():
        # Each example works with no arguments against `make run` (127.0.0.1:8083).
        for f in ("worker-awscli.sh", "worker_boto3.py", "node/worker.mjs", "issuer.py"):
            with open(os.path.join(ctx.repo, "examples", f)) as src:
                expect("http://127.0.0.1:8083" in src.read(), f"{f}: default endpoint")
        expect(os.path.isdir(os.path.join(node_dir, "node_modules", "@aws-sdk", "client-sfn")),
               f"{node_dir}/node_modules is missing: run tools/install-deps.sh")
    cases.run("each example defaults to make run's 127.0.0.1:8083", defaults, fatal=True)

    def three_workers():
        outs = run_round(ctx, ctx.open.endpoint, 6, [
            ("awscli", ["bash", "examples/worker-awscli.sh"], 2),
            ("boto3", ["/usr/bin/python3", "examples/worker_boto3.py"], 2),
            ("node", [node, "examples/node/worker.mjs"], 2),
        ], {}, log_dir)
        for name in ("awscli", "boto3", "node"):
            handled = re.findall(r"^task (done|failed): ", outs[name], re.M)
            expect_eq(len(handled), 2, f"{name} tasks; its output:\n{outs[name]}")
        expect(outs["issuer"].rstrip().endswith("6 outcomes: 1 failed, 5 succeeded"),
               f"issuer output:\n{outs['issuer']}")
        expect_eq(len(re.findall(r"^outcome #\d+ ", outs["issuer"], re.M)), 6, "outcome lines")
    cases.run("issuer.py + worker-awscli.sh + worker_boto3.py + node/worker.mjs",
              three_workers)

    def with_credentials():
        outs = run_round(ctx, ctx.auth.endpoint, 3, [
            ("boto3-signed", ["/usr/bin/python3", "examples/worker_boto3.py"], 3),
        ], {"AWS_ACCESS_KEY_ID": h.TEST_KEY_ID, "AWS_SECRET_ACCESS_KEY": h.TEST_SECRET},
            log_dir, tag="-signed")
        expect(outs["issuer"].rstrip().endswith("3 outcomes: 1 failed, 2 succeeded"),
               f"issuer output:\n{outs['issuer']}")
    cases.run("issuer.py + worker_boto3.py against --aws-credentials", with_credentials)

    def readme_snippet():
        # The five-line boto3 worker of examples/README.md (and the top-level README), as
        # written but for the endpoint.
        with open(os.path.join(ctx.repo, "examples", "README.md")) as f:
            text = f.read()
        code = re.search(r"The smallest boto3 worker.*?```python\n(.*?)```", text, re.S).group(1)
        expect_eq(len(code.strip().splitlines()), 5, f"snippet lines:\n{code}")
        expect("http://127.0.0.1:8083" in code, "the snippet's endpoint")
        path = os.path.join(log_dir, "snippet.py")
        with open(path, "w") as f:
            f.write(code.replace("http://127.0.0.1:8083", ctx.open.endpoint))
        env = h.client_env(key_id="x", secret="x")
        p = start(ctx, "snippet", ["/usr/bin/python3", path], env, log_dir)
        try:
            arn = h.ARN_PREFIX + "tokenwheel-example"
            deadline = time.monotonic() + 30
            while True:  # the snippet creates the activity
                try:
                    ctx.api_open.aws("DescribeActivity", activityArn=arn)
                    break
                except h.ApiError:
                    expect(p.poll() is None, f"the snippet exited:\n{output(p)}")
                    expect(time.monotonic() < deadline, "the snippet made no activity")
                    time.sleep(0.05)
            token = ctx.api_open.issue(arn, {"echo": [1, "two"]})
            d = ctx.api_open.wait_state(token, "SUCCEEDED", bound_s=30)
            expect_eq(d["output"], d["input"], "the echo")
            expect(p.poll() is None, f"the snippet exited:\n{output(p)}")
        finally:
            stop_group(p)
    cases.run("the README's five-line boto3 worker", readme_snippet)
