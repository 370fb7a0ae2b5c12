#!/usr/bin/python3
"""A workflow engine's side of tokenwheel, over the TokenWheel.* JSON operations of the AWS
gateway, with only the Python standard library plus botocore's SigV4 signer: it issues tasks
on an activity, reads their outcomes from its consumer cursor, and acknowledges them.

  make run                                    # in another terminal: tokenwheeld on :8083
  /usr/bin/python3 examples/issuer.py         # issues 5 tasks, prints their outcomes
  examples/worker-awscli.sh                   # ... while any worker takes them

The consumer cursor is durable: stop this program (or the server) at any point and run it
again, and it first finishes the outcomes it had not acknowledged. Every task it issues carries
an idempotency key, so a retried issue after a lost reply does not make a second task.

Environment: TW_ENDPOINT (http://127.0.0.1:8083), TW_ACTIVITY (tokenwheel-example), TW_TASKS
(5; the last one has a bad input, to show a failure), TW_CONSUMER (example-issuer),
TW_WAIT_SECONDS (20: how long one GetOutcomes call waits for events; at most the server's
--max-poll-seconds, 55 by default),
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (needed only when the server has --aws-credentials;
dummy keys otherwise). Debian: python3-botocore.
"""

import json
import os
import time
import urllib.error
import urllib.request
import uuid

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


class TokenWheel:
    """POST / with X-Amz-Target <prefix>.<Op>, a JSON body, signed with SigV4 (service
    "states"). Errors raise TokenWheelError with the AWS code and message."""

    def __init__(self, endpoint, key_id, secret, region):
        self.url = endpoint.rstrip("/") + "/"
        self.signer = SigV4Auth(Credentials(key_id, secret), "states", region)
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, target, **body):
        data = json.dumps(body).encode()
        request = AWSRequest(method="POST", url=self.url, data=data, headers={
            "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": target})
        self.signer.add_auth(request)
        req = urllib.request.Request(self.url, data=data, headers=dict(request.headers.items()),
                                     method="POST")
        for attempt in range(30):  # the server may be restarting: retry for ~30 s
            try:
                with self.opener.open(req, timeout=90) as r:
                    return json.loads(r.read() or b"{}")
            except urllib.error.HTTPError as e:
                doc = json.loads(e.read() or b"{}")
                raise TokenWheelError(doc.get("__type", "").rsplit("#", 1)[-1],
                                      doc.get("message", ""), e.code) from None
            except (urllib.error.URLError, ConnectionError) as e:
                print(f"  (server unreachable: {e}; retrying)", flush=True)
                time.sleep(1)
                self.signer.add_auth(request)  # a fresh signature time
                req = urllib.request.Request(self.url, data=data, method="POST",
                                             headers=dict(request.headers.items()))
        raise TokenWheelError("Unreachable", f"no answer from {self.url}", 0)

    def aws(self, op, **body):
        return self.call("AWSStepFunctions." + op, **body)

    def tw(self, op, **body):
        return self.call("TokenWheel." + op, **body)


class TokenWheelError(Exception):
    def __init__(self, code, message, status):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status = code, message, status


def main():
    tw = TokenWheel(os.environ.get("TW_ENDPOINT", "http://127.0.0.1:8083"),
                    os.environ.get("AWS_ACCESS_KEY_ID", "AKIDEXAMPLEISSUER"),
                    os.environ.get("AWS_SECRET_ACCESS_KEY", "example-secret-not-checked"),
                    os.environ.get("AWS_REGION", "us-east-1"))
    consumer = os.environ.get("TW_CONSUMER", "example-issuer")
    count = int(os.environ.get("TW_TASKS", "5"))
    wait_s = int(os.environ.get("TW_WAIT_SECONDS", "20"))
    arn = tw.aws("CreateActivity", name=os.environ.get("TW_ACTIVITY", "tokenwheel-example"))[
        "activityArn"]

    # Register the consumer before issuing (a new consumer starts after the last event so far),
    # and first finish what an earlier run left unacknowledged.
    leftover = tw.tw("GetOutcomes", consumer=consumer, waitSeconds=0)
    for event in leftover["events"]:
        print(f"earlier outcome #{event['sequence']}: {event.get('correlation')} "
              f"{event['state']}", flush=True)
    if leftover["events"]:
        tw.tw("AckOutcomes", consumer=consumer, sequence=leftover["events"][-1]["sequence"])

    run_id = uuid.uuid4().hex[:8]
    pending = {}
    for i in range(count):
        bad = i == count - 1 and count > 1
        job = {"numbers": "oops"} if bad else {"numbers": list(range(i + 2))}
        key = f"{run_id}-{i}"
        r = tw.tw("IssueTask", activityArn=arn, input=json.dumps(job), idempotencyKey=key,
                  correlation=key, timeoutSeconds=300, heartbeatSeconds=120,
                  scheduleToStartSeconds=600)
        pending[r["taskToken"]] = key
        print(f"issued {key}: {json.dumps(job)}", flush=True)
    print(f"waiting for {count} outcomes on {arn} (start a worker from examples/)", flush=True)

    counts = {}
    while pending:
        r = tw.tw("GetOutcomes", consumer=consumer, waitSeconds=wait_s, maxEvents=100)
        for event in r["events"]:
            key = pending.pop(event["taskToken"], None)
            if key is None:
                continue  # another issuer's task on this consumer: not ours to act on
            state = event["state"]
            counts[state] = counts.get(state, 0) + 1
            detail = event.get("output") if state == "SUCCEEDED" else \
                f"{event.get('error')} {event.get('cause') or event.get('timeoutReason') or ''}"
            print(f"outcome #{event['sequence']} {key}: {state} {detail}", flush=True)
        if r["events"]:
            # Acknowledged only once handled: after a crash they come again.
            tw.tw("AckOutcomes", consumer=consumer, sequence=r["events"][-1]["sequence"])
    summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    print(f"{count} outcomes: {summary}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
    except TokenWheelError as e:
        raise SystemExit(f"issuer: {e}")
