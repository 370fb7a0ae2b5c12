"""A workflow-engine loop over TokenWheel.*, with only the standard library plus botocore's
SigV4 signer (harness.JsonApi), against the server with --aws-credentials: every call is signed.

The engine issues tasks (IssueTasks, IssueTask with an idempotency key, a callback task), a
worker takes them (AWSStepFunctions.GetActivityTask over the same JSON client) and completes,
fails or heartbeats them, the engine cancels one, consumes the outcome events from its consumer
cursor (GetOutcomes), acknowledges part of them (AckOutcomes), the server restarts (SIGTERM, same
data dir and port), and the engine resumes from the cursor: exactly the unacknowledged events
come again, the task left running survives, and a schedule-to-start timer armed before the
restart fires after it.
"""

import json

import harness as h
from harness import expect, expect_eq

CONSUMER = "engine-1"


class WorkflowEngine:
    """The issuer side: issue, read outcomes from the consumer's cursor, ack."""

    def __init__(self, api, consumer):
        self.api = api
        self.consumer = consumer

    def issue_batch(self, specs):
        r = self.api.tw("IssueTasks", tasks=specs)
        return r["results"]

    def outcomes(self, wait_s=1, max_events=100, from_seq=None):
        body = {"consumer": self.consumer, "maxEvents": max_events, "waitSeconds": wait_s}
        if from_seq is not None:
            body["fromSequence"] = from_seq
        return self.api.tw("GetOutcomes", **body)

    def wait_outcomes(self, count, bound_s=20):
        """Reads from the cursor (without acking) until `count` events are there."""
        import time
        deadline = time.monotonic() + bound_s
        while True:
            r = self.outcomes(wait_s=1)
            if len(r["events"]) >= count:
                return r
            expect(time.monotonic() < deadline,
                   f"{len(r['events'])} of {count} outcome events within {bound_s} s: {r}")

    def ack(self, seq):
        return self.api.tw("AckOutcomes", consumer=self.consumer, sequence=seq)


def run(cases, ctx):
    api = ctx.api_auth
    engine = WorkflowEngine(api, CONSUMER)
    st = {}

    def setup():
        st["arn"] = api.aws("CreateActivity", name="issuer-work")["activityArn"]
        # A new consumer starts after the last event so far (none yet).
        r = engine.outcomes(wait_s=0)
        expect_eq((r["events"], r["ackedSequence"]), ([], 0), "a new consumer")
        st["next"] = r["nextSequence"]
    cases.run("create the activity and the consumer", setup, fatal=True)

    def issue():
        arn = st["arn"]
        specs = [{"activityArn": arn, "input": json.dumps({"i": i}), "correlation": f"job-{i}",
                  "idempotencyKey": f"job-{i}", "timeoutSeconds": 300}
                 for i in range(5)]
        results = engine.issue_batch(specs)
        expect_eq([r.get("existing") for r in results], [False] * 5, "fresh tasks")
        st["tokens"] = [r["taskToken"] for r in results]
        # The same idempotency key again: the same task, not a second one.
        again = api.tw("IssueTask", **specs[2])
        expect_eq((again["taskToken"], again["existing"]), (st["tokens"][2], True), "idempotent")
        # One bad item does not sink the batch.
        mixed = engine.issue_batch([
            {"activityArn": arn, "input": "{not json", "correlation": "bad-input"},
            {"activityArn": "nope", "input": "{}"},
            {"activityArn": arn, "input": "{}", "correlation": "job-5", "timeoutSeconds": 300},
        ])
        expect_eq(mixed[0]["error"].get("code"), "InvalidOutput", f"item 0: {mixed[0]}")
        expect(mixed[0]["error"]["message"].startswith("Invalid Input: 'Invalid JSON"),
               f"item 0: {mixed[0]}")
        expect_eq(mixed[1]["error"], {"code": "InvalidArn", "message": h.invalid_arn("nope")},
                  "item 1")
        st["tokens"].append(mixed[2]["taskToken"])
        # A callback task: no activity, the token goes straight to the engine.
        st["callback"] = api.issue(None, {"callback": 1}, timeoutSeconds=300,
                                   correlation="callback-1")
        # Queued, never polled: its schedule-to-start clock fires after the restart.
        st["stale"] = api.issue(arn, {"stale": True}, scheduleToStartSeconds=4,
                                correlation="stale")
        d = api.describe(st["tokens"][0])
        expect_eq((d["state"], d["kind"], d["correlation"]), ("SCHEDULED", "activity", "job-0"),
                  "DescribeTask of a queued task")
    cases.run("issue: IssueTasks, an idempotency key, a callback task", issue, fatal=True)

    def hand_out_and_complete():
        arn = st["arn"]
        got = {}
        for _ in range(6):
            r = api.aws("GetActivityTask", activityArn=arn, workerName="issuer-worker")
            expect("taskToken" in r, f"a poll got nothing: {r}")
            got[r["taskToken"]] = json.loads(r["input"])
        t = st["tokens"]
        expect_eq(set(got), set(t), "the worker got every issued task")
        # FIFO per activity: job-0 first ... and the stale task is last, not handed out.
        for i in range(5):
            expect_eq(got[t[i]], {"i": i}, f"input of job-{i}")
        api.aws("SendTaskSuccess", taskToken=t[0], output=json.dumps({"r": 0}))
        api.aws("SendTaskHeartbeat", taskToken=t[1])
        api.aws("SendTaskSuccess", taskToken=t[1], output=json.dumps({"r": 1}))
        api.aws("SendTaskFailure", taskToken=t[2], error="Job.Failed", cause="job 2 broke")
        api.tw("CancelTask", taskToken=t[3])
        api.aws("SendTaskSuccess", taskToken=st["callback"], output='"callback done"')
        # t[4] stays STARTED across the restart; t[5] too, completed after it.
        expect_eq(api.describe(t[4])["state"], "STARTED", "job-4")
        with h.expect_api_error("TaskTimedOut", h.MSG_TASK_GONE):
            api.aws("SendTaskSuccess", taskToken=t[3], output="{}")  # cancelled
    cases.run("hand out, complete, fail, heartbeat, cancel", hand_out_and_complete, fatal=True)

    def consume_and_ack():
        r = engine.wait_outcomes(5)
        ev = r["events"]
        expect_eq(len(ev), 5, f"events: {ev}")
        seqs = [e["sequence"] for e in ev]
        expect_eq(seqs, list(range(st["next"], st["next"] + 5)), "sequences")
        t = st["tokens"]
        summary = [(e["taskToken"], e["state"], e.get("correlation")) for e in ev]
        expect_eq(summary, [(t[0], "SUCCEEDED", "job-0"), (t[1], "SUCCEEDED", "job-1"),
                            (t[2], "FAILED", "job-2"), (t[3], "CANCELLED", "job-3"),
                            (st["callback"], "SUCCEEDED", "callback-1")], "events")
        expect_eq(json.loads(ev[0]["output"]), {"r": 0}, "output in the event")
        expect_eq((ev[2]["error"], ev[2]["cause"]), ("Job.Failed", "job 2 broke"), "failure")
        expect_eq(ev[0]["activityArn"], st["arn"], "activityArn in the event")
        expect("activityArn" not in ev[4], "a callback task has no activity")
        # Reading again without an ack gives the same events; fromSequence reads from there.
        expect_eq(engine.outcomes(wait_s=0)["events"], ev, "a re-read")
        r = engine.outcomes(wait_s=0, from_seq=seqs[1], max_events=2)
        expect_eq(r["events"], ev[1:3], "fromSequence, maxEvents 2")
        # The engine processed the first three durably: ack through the third.
        engine.ack(seqs[2])
        st["acked"] = seqs[2]
        st["unacked"] = ev[3:]
        stats = api.tw("Stats")
        expect_eq(stats["consumers"].get(CONSUMER), seqs[2], "Stats: the consumer's cursor")
    cases.run("consume outcomes from the cursor, ack part of them", consume_and_ack, fatal=True)

    def restart():
        expect_eq(api.describe(st["stale"])["state"], "SCHEDULED",
                  "the stale task before the restart (its timer must fire after it)")
        before = ctx.auth.aws_address
        ctx.auth.restart()
        expect_eq(ctx.auth.aws_address, before, "same address after the restart")
    cases.run("restart the server (SIGTERM, same data dir and port)", restart, fatal=True)

    def resume():
        r = engine.outcomes(wait_s=0)
        expect_eq(r["ackedSequence"], st["acked"], "the cursor survived")
        unacked = st["unacked"]
        expect_eq(r["events"][:len(unacked)], unacked, "exactly the unacknowledged events again")
        # The stale task's 4 s clock may already have run out when the restart was slow: its
        # timeout is then the one event after them, and nothing else is.
        extra = [(e["taskToken"], e["state"]) for e in r["events"][len(unacked):]]
        expect_eq(extra in ([], [(st["stale"], "TIMED_OUT")]), True,
                  f"no other event after the unacknowledged ones: {extra}")
        t = st["tokens"]
        # The task left running survives the restart and completes; job-5 too.
        expect_eq(api.describe(t[4])["state"], "STARTED", "job-4 after the restart")
        api.aws("SendTaskSuccess", taskToken=t[4], output='{"r": 4}')
        api.aws("SendTaskFailure", taskToken=t[5], error="Late.Failure")
        with h.expect_api_error("TaskTimedOut", h.MSG_TASK_GONE):
            api.aws("SendTaskSuccess", taskToken=t[0], output='{"again": true}')
        # The schedule-to-start timer armed before the restart fires after it.
        d = api.wait_state(st["stale"], "TIMED_OUT", bound_s=15)
        expect_eq(d.get("timeoutReason"), "scheduleToStart", "stale task")
        r = engine.wait_outcomes(5)
        tail = [(e["taskToken"], e["state"], e.get("timeoutReason")) for e in r["events"][2:]]
        expect_eq(sorted(tail), sorted([(t[4], "SUCCEEDED", None), (t[5], "FAILED", None),
                                        (st["stale"], "TIMED_OUT", "scheduleToStart")]),
                  "new events after the restart")
        stale = next(e for e in r["events"] if e["taskToken"] == st["stale"])
        expect_eq(stale.get("error"), "States.Timeout", "a timeout's error")
        last = r["events"][-1]["sequence"]
        engine.ack(last)
        r = engine.outcomes(wait_s=1)
        expect_eq((r["events"], r["ackedSequence"]), ([], last), "all consumed")
        expect_eq(api.tw("Stats")["eventsNotAcked"], 0, "Stats: nothing left to ack")
    cases.run("resume from the cursor after the restart", resume)

    def consumers():
        # Events every consumer has acknowledged are no longer kept.
        with h.expect_api_error(
                "ValidationException",
                f"events from sequence {st['next']} are no longer kept; omit fromSequence to "
                "resume from the consumer's cursor"):
            engine.outcomes(wait_s=0, from_seq=st["next"])
        # A second consumer has its own cursor, starting at the end.
        other = WorkflowEngine(api, "engine-2")
        r = other.outcomes(wait_s=0)
        expect_eq(r["events"], [], "a new consumer starts at the end")
        expect_eq(api.tw("Stats")["consumers"].get("engine-2"), r["ackedSequence"], "Stats")
        api.tw("DeleteConsumer", consumer="engine-2")
        api.tw("DeleteConsumer", consumer="engine-2")  # twice is fine
        expect("engine-2" not in api.tw("Stats")["consumers"], "deleted consumer")
    cases.run("history no longer kept; a second consumer; DeleteConsumer", consumers)

    def errors():
        with h.expect_api_error("InvalidToken", h.MSG_INVALID_TOKEN):
            api.tw("DescribeTask", taskToken="forged-token")
        with h.expect_api_error("InvalidToken", h.MSG_INVALID_TOKEN):
            api.tw("CancelTask", taskToken="forged-token")
        with h.expect_api_error("ValidationException", h.must_not_be_null("consumer")):
            api.tw("GetOutcomes")
        with h.expect_api_error("ValidationException",
                                h.must_not_be_null("consumer", "sequence")):
            api.tw("AckOutcomes")
        with h.expect_api_error("InvalidArn", h.invalid_arn("nope")):
            api.tw("IssueTask", activityArn="nope", input="{}")
        with h.expect_api_error("ValidationException", h.too_long("input", h.PAYLOAD_BYTES_MAX)):
            api.tw("IssueTask", input=h.json_string_of_bytes(h.PAYLOAD_BYTES_MAX + 1),
                   timeoutSeconds=10)
        # The issuer operations check signatures like the AWS ones.
        wrong = h.JsonApi(ctx.auth.endpoint, (h.TEST_KEY_ID, h.WRONG_SECRET))
        with h.expect_api_error("InvalidSignatureException", h.MSG_BAD_SIGNATURE):
            wrong.tw("Stats")
        unknown = h.JsonApi(ctx.auth.endpoint, (h.UNKNOWN_KEY_ID, h.TEST_SECRET))
        with h.expect_api_error("UnrecognizedClientException", h.MSG_UNKNOWN_KEY):
            unknown.tw("IssueTask", input="{}", timeoutSeconds=10)
        anon = h.JsonApi(ctx.auth.endpoint)
        with h.expect_api_error("MissingAuthenticationTokenException", h.MSG_MISSING_AUTH):
            anon.tw("GetOutcomes", consumer=CONSUMER)
    cases.run("TokenWheel.* errors: same codes, texts and authentication", errors)
