"""The AWS CLI (Debian awscli 2.x, /usr/bin/aws) as an unchanged worker.

Each call is one `aws --endpoint-url URL stepfunctions ...` process, as a shell worker makes
it. Errors are asserted as the CLI shows them: exit status 254 and exactly
"An error occurred (<Code>) when calling the <Op> operation: <message>" on stderr; what the CLI
refuses before sending exits 252 with its parameter-validation text.
"""

import json
import os
import subprocess

import harness as h
from harness import expect, expect_eq

AWS = "/usr/bin/aws"  # Debian's awscli; a pip `aws` may be first on PATH


class Cli:
    def __init__(self, endpoint, home, key_id=h.TEST_KEY_ID, secret=h.TEST_SECRET):
        self.endpoint = endpoint
        self.env = h.client_env(key_id=key_id, secret=secret, home=home)

    def run(self, op, *args, extra=()):
        """(exit status, stdout, stderr) of `aws stepfunctions <op> <args>`."""
        argv = [AWS, "--endpoint-url", self.endpoint, *extra, "--output", "json",
                "stepfunctions", op, *args]
        p = subprocess.run(argv, env=self.env, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=120)
        return p.returncode, p.stdout, p.stderr

    def ok(self, op, *args, **kw):
        rc, out, err = self.run(op, *args, **kw)
        expect_eq(rc, 0, f"aws stepfunctions {op} exit status (stderr: {err.strip()!r})")
        return json.loads(out) if out.strip() else {}

    def error(self, code, aws_op, message, op, *args, **kw):
        """The call must fail the way the CLI shows a service error."""
        rc, out, err = self.run(op, *args, **kw)
        expect_eq(rc, 254, f"aws stepfunctions {op} exit status (stderr: {err.strip()!r})")
        prefix = f"An error occurred ({code}) when calling the {aws_op} operation: "
        text = err.strip()
        expect(text.startswith(prefix), f"stderr:\n  expected: {prefix!r}...\n  actual: {text!r}")
        h.expect_message(text[len(prefix):], message)

    def errors(self, *checks):
        """Several independent error() checks, run side by side: each CLI process takes
        ~0.6 s of CPU to start, and these do not depend on one another."""
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(self.error, *c) for c in checks]
        problems = []
        for c, f in zip(checks, futures):
            if f.exception() is not None:
                problems.append(f"{c[0]} from {c[3:]!r}: {f.exception()}"[:2000])
        expect(not problems, "\n".join(problems))

    def refused(self, fragment, op, *args):
        """The CLI refuses before sending: exit status 252, `fragment` on stderr."""
        rc, out, err = self.run(op, *args)
        expect_eq(rc, 252, f"aws stepfunctions {op} exit status (stderr: {err.strip()!r})")
        expect(fragment in err, f"stderr {err.strip()!r} lacks {fragment!r}")


def run(cases, ctx):
    home = os.path.join(ctx.tmp, "home")
    os.makedirs(home, exist_ok=True)
    cli = Cli(ctx.open.endpoint, home)
    api = ctx.api_open
    st = {}

    def create_describe():
        r = cli.ok("create-activity", "--name", "cli-worker")
        arn = h.ARN_PREFIX + "cli-worker"
        expect_eq(r["activityArn"], arn, "activityArn")
        again = cli.ok("create-activity", "--name", "cli-worker")
        expect_eq(again, r, "CreateActivity is idempotent (same ARN and creationDate)")
        d = cli.ok("describe-activity", "--activity-arn", arn)
        expect_eq((d["activityArn"], d["name"], d["creationDate"]),
                  (arn, "cli-worker", r["creationDate"]), "describe-activity")
        st["arn"] = arn
    cases.run("create-activity (twice) and describe-activity", create_describe, fatal=True)

    def list_paging():
        for i in range(1, 3):
            api.aws("CreateActivity", name=f"cli-page-{i}")
        everything = [a["name"] for a in api.aws("ListActivities", maxResults=1000)["activities"]]
        expect_eq(len(everything), 3, f"activities: {everything}")
        # By hand: --max-results 1 and --next-token (the CLI then makes exactly one call).
        names, token = [], None
        for page in range(1, 10):
            args = ["--max-results", "1"] + (["--next-token", token] if token else [])
            r = cli.ok("list-activities", *args)
            expect_eq(len(r["activities"]), 1, f"page {page} size")
            names += [a["name"] for a in r["activities"]]
            token = r.get("nextToken")
            if not token:
                break
        expect_eq(names, everything, "names paged by hand")
        # The CLI's own pagination, one activity per request.
        before = api.metric_requests("ListActivities")
        r = cli.ok("list-activities", "--page-size", "1")
        expect_eq([a["name"] for a in r["activities"]], everything, "names, --page-size 1")
        requests = api.metric_requests("ListActivities") - before
        expect(requests >= len(everything), f"--page-size 1 made {requests} requests")
        cli.error("InvalidToken", "ListActivities", h.MSG_INVALID_TOKEN,
                  "list-activities", "--max-results", "1", "--next-token", "not-a-next-token")
    cases.run("list-activities: --max-results 1 by hand, --page-size 1", list_paging)

    def bad_names_and_arns():
        bad = "not-an-arn"
        unknown = h.ARN_PREFIX + "cli-never-created"
        cli.errors(
            ("InvalidName", "CreateActivity", h.invalid_name("bad name"),
             "create-activity", "--name", "bad name"),
            ("InvalidArn", "DescribeActivity", h.invalid_arn(bad),
             "describe-activity", "--activity-arn", bad),
            ("InvalidArn", "GetActivityTask", h.invalid_arn(bad),
             "get-activity-task", "--activity-arn", bad),
            ("ActivityDoesNotExist", "GetActivityTask", h.activity_does_not_exist(unknown),
             "get-activity-task", "--activity-arn", unknown))
        # Longer names and the other operations: boto3_suite.py and js/suite.mjs.
    cases.run("invalid names, invalid ARNs, unknown activity", bad_names_and_arns)

    def empty_poll():
        rc, out, err = cli.run("get-activity-task", "--activity-arn", st["arn"])
        expect_eq(rc, 0, f"exit status ({err.strip()!r})")
        expect("taskToken" not in out, f"an empty poll printed a token: {out!r}")
    cases.run("empty poll returns no token", empty_poll)

    def success_path():
        token = api.issue(st["arn"], {"n": 12}, timeoutSeconds=60, heartbeatSeconds=30)
        r = cli.ok("get-activity-task", "--activity-arn", st["arn"], "--worker-name", "cli-w")
        expect_eq(r.get("taskToken"), token, "the polled token")
        expect_eq(json.loads(r["input"]), {"n": 12}, "input")
        expect_eq(cli.ok("send-task-heartbeat", "--task-token", token), {}, "heartbeat output")
        expect_eq(cli.ok("send-task-success", "--task-token", token,
                         "--task-output", '{"double": 24}'), {}, "success output")
        d = api.describe(token)
        expect_eq((d["state"], json.loads(d["output"]), d.get("worker")),
                  ("SUCCEEDED", {"double": 24}, "cli-w"), "DescribeTask")
        st["done"] = token
    cases.run("poll -> heartbeat -> success, verified with DescribeTask", success_path, fatal=True)

    def failure_path():
        token = api.issue(st["arn"], {"n": -1})
        r = cli.ok("get-activity-task", "--activity-arn", st["arn"])
        expect_eq(r.get("taskToken"), token, "the polled token")
        cli.ok("send-task-failure", "--task-token", token, "--error", "Negative",
               "--cause", "n must be >= 0")
        d = api.describe(token)
        expect_eq((d["state"], d.get("error"), d.get("cause")),
                  ("FAILED", "Negative", "n must be >= 0"), "DescribeTask")
    cases.run("poll -> failure with error and cause", failure_path)

    def second_completion_and_forged():
        t = st["done"]
        cli.errors(
            ("TaskTimedOut", "SendTaskSuccess", h.MSG_TASK_GONE,
             "send-task-success", "--task-token", t, "--task-output", "{}"),
            ("TaskTimedOut", "SendTaskHeartbeat", h.MSG_TASK_GONE,
             "send-task-heartbeat", "--task-token", t),
            ("InvalidToken", "SendTaskSuccess", h.MSG_INVALID_TOKEN,
             "send-task-success", "--task-token", "forged-token", "--task-output", "{}"),
            ("InvalidToken", "SendTaskHeartbeat", h.MSG_INVALID_TOKEN,
             "send-task-heartbeat", "--task-token", "forged-token"))
        expect_eq(json.loads(api.describe(t)["output"]), {"double": 24}, "the first success")
    cases.run("a second success / heartbeat: TaskTimedOut; forged: InvalidToken",
              second_completion_and_forged)

    def limits():
        token = api.issue(st["arn"], {"n": 1})
        cli.ok("get-activity-task", "--activity-arn", st["arn"])
        # 262145 bytes is past the 128 KiB an argv string may hold: the CLI reads file://.
        big = os.path.join(ctx.tmp, "output-262145.json")
        with open(big, "w") as f:
            f.write(h.json_string_of_bytes(h.PAYLOAD_BYTES_MAX + 1))
        cli.errors(
            ("ValidationException", "SendTaskSuccess", h.too_long("output", h.PAYLOAD_BYTES_MAX),
             "send-task-success", "--task-token", token, "--task-output", "file://" + big),
            ("InvalidOutput", "SendTaskSuccess", h.INVALID_JSON_OUTPUT,
             "send-task-success", "--task-token", token, "--task-output", "not json"),
            ("ValidationException", "SendTaskFailure", h.too_long("error", 256),
             "send-task-failure", "--task-token", token, "--error", "e" * 257))
        expect_eq(api.describe(token)["state"], "STARTED", "refused calls change nothing")
        ok = os.path.join(ctx.tmp, "output-262144.json")
        with open(ok, "w") as f:
            f.write(h.json_string_of_bytes(h.PAYLOAD_BYTES_MAX))
        cli.ok("send-task-success", "--task-token", token, "--task-output", "file://" + ok)
        expect_eq(len(api.describe(token)["output"]), h.PAYLOAD_BYTES_MAX, "stored output")
    cases.run("oversize output (262145 bytes, file://), bad JSON, long error", limits)

    def missing_members():
        # argparse first, then botocore's own check (--cli-input-json skips argparse's).
        cli.refused("the following arguments are required: --task-output",
                    "send-task-success", "--task-token", st["done"])
        cli.refused('Missing required parameter in input: "output"',
                    "send-task-success", "--cli-input-json",
                    json.dumps({"taskToken": st["done"]}))
    cases.run("missing members: refused by the CLI before sending (exit 252)", missing_members)

    def heartbeat_timeout():
        token = api.issue(st["arn"], {"n": 2}, timeoutSeconds=120, heartbeatSeconds=1)
        r = cli.ok("get-activity-task", "--activity-arn", st["arn"], "--worker-name", "slow")
        expect_eq(r.get("taskToken"), token, "the polled token")
        d = api.wait_state(token, "TIMED_OUT", bound_s=15)
        expect_eq(d.get("timeoutReason"), "heartbeat", "timeoutReason")
        cli.error("TaskTimedOut", "SendTaskSuccess", h.MSG_TASK_GONE,
                  "send-task-success", "--task-token", token, "--task-output", '{"late": 1}')
    cases.run("late success after a heartbeat timeout: TaskTimedOut", heartbeat_timeout)

    def delete_activity():
        arn = api.aws("CreateActivity", name="cli-doomed")["activityArn"]
        queued = api.issue(arn, {"queued": True})
        expect_eq(cli.ok("delete-activity", "--activity-arn", arn), {}, "delete output")
        cli.ok("delete-activity", "--activity-arn", arn)
        d = api.describe(queued)
        expect_eq((d["state"], d.get("error")), ("FAILED", "States.Runtime"), "queued task")
        cli.error("ActivityDoesNotExist", "DescribeActivity", h.activity_does_not_exist(arn),
                  "describe-activity", "--activity-arn", arn)
    cases.run("delete-activity (twice); its queued task fails", delete_activity)

    # ---- the server with --aws-credentials ----
    good = Cli(ctx.auth.endpoint, home)

    def signed_worker():
        arn = ctx.api_auth.aws("CreateActivity", name="cli-signed")["activityArn"]
        token = ctx.api_auth.issue(arn, {"signed": True})
        r = good.ok("get-activity-task", "--activity-arn", arn, "--worker-name", "cli-signed")
        expect_eq(r.get("taskToken"), token, "the polled token")
        good.ok("send-task-heartbeat", "--task-token", token)
        good.ok("send-task-success", "--task-token", token, "--task-output", '{"ok": true}')
        expect_eq(ctx.api_auth.describe(token)["state"], "SUCCEEDED", "state")
        good.error("TaskDoesNotExist", "SendTaskSuccess", h.MSG_TASK_DOES_NOT_EXIST,
                   "send-task-success", "--task-token", ctx.foreign_token, "--task-output", "{}")
    cases.run("signed worker loop; a well-formed unknown token: TaskDoesNotExist",
              signed_worker)

    def wrong_secret():
        bad = Cli(ctx.auth.endpoint, home, secret=h.WRONG_SECRET)
        bad.error("InvalidSignatureException", "SendTaskSuccess", h.MSG_BAD_SIGNATURE,
                  "send-task-success", "--task-token", "t", "--task-output", '{"a": 1}')
    cases.run("wrong secret: InvalidSignatureException", wrong_secret)

    def unknown_key_and_unsigned():
        bad = Cli(ctx.auth.endpoint, home, key_id=h.UNKNOWN_KEY_ID)
        bad.error("UnrecognizedClientException", "GetActivityTask", h.MSG_UNKNOWN_KEY,
                  "get-activity-task", "--activity-arn", h.ARN_PREFIX + "cli-signed")
        good.error("MissingAuthenticationTokenException", "ListActivities", h.MSG_MISSING_AUTH,
                   "list-activities", extra=("--no-sign-request",))
    cases.run("unknown access key: UnrecognizedClientException; --no-sign-request: "
              "MissingAuthenticationTokenException", unknown_key_and_unsigned)
