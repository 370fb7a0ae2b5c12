#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets: tests/fuzz/corpus/<target>/seed-*.

Run it again after changing a target's input format, the fuzz token key or the fuzz SigV4 key
(tests/fuzz/fuzz_support.h, sigv4_fuzz.cc); it rewrites only seed-* files, never the
regress-* inputs that reproduce fixed bugs. Tokens are computed as engine/token.h specifies
them; signed requests are signed by botocore (Debian's python3-botocore, from
tools/install-deps.sh) with its clock pinned to fuzz_support.h's kStartMs.

    /usr/bin/python3 tests/fuzz/make_seeds.py
"""

import base64
import datetime
import hashlib
import hmac
import json
import os
import struct
import sys

import botocore.auth
import botocore.awsrequest
import botocore.credentials

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

# fuzz_support.h: TokenKey() (key id 1) and kStartMs; token_fuzz.cc: OtherKey() (key id 7).
TOKEN_KEY = bytes((7 * i + 3) & 0xFF for i in range(32))
OTHER_KEY = bytes((0xA5 ^ (13 * i)) & 0xFF for i in range(32))
START = datetime.datetime(2023, 11, 14, 22, 13, 20)  # 1'700'000'000'000 ms
# sigv4_fuzz.cc and gateway_fuzz.cc: the key the gateway under test accepts.
KEY_ID = "AKIATOKENWHEELFUZZ01"
SECRET = "tokenwheel/fuzz/secret+KEY/0123456789ab"
ARN = "arn:aws:states:us-east-1:000000000000:activity:fuzz"


def token(shard, hi, lo, key=TOKEN_KEY, key_id=1):
    """A task token, engine/token.h's wire format version 1."""
    signed = struct.pack(">BBHQQ", 1, key_id, shard, hi, lo)
    mac = hmac.new(key, signed, hashlib.sha256).digest()[:14]
    return base64.urlsafe_b64encode(signed + mac).rstrip(b"=").decode()


TOKEN = token(0, (1_700_000_000_000 << 20) + 1, 0x0123456789ABCDEF)


def write(target, name, data):
    directory = os.path.join(CORPUS, target)
    os.makedirs(directory, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(directory, "seed-" + name), "wb") as f:
        f.write(data)


def clear_seeds():
    for target in os.listdir(CORPUS) if os.path.isdir(CORPUS) else []:
        for name in os.listdir(os.path.join(CORPUS, target)):
            if name.startswith("seed-"):
                os.remove(os.path.join(CORPUS, target, name))


# ---- token ----

def token_seeds():
    write("token", "key1", TOKEN)
    write("token", "key1-shard7", token(7, 1, 2))
    write("token", "key7", token(0, 5, 6, OTHER_KEY, 7))
    write("token", "unknown-key", token(0, 5, 6, OTHER_KEY, 9))
    write("token", "one-char-changed", TOKEN[:10] + ("A" if TOKEN[10] != "A" else "B") + TOKEN[11:])
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(TOKEN[-1])
    write("token", "padding-bits", TOKEN[:-1] + "ABCDEFGHIJKLMNOP"[(last | 1) % 16])
    write("token", "short", TOKEN[:-1])
    write("token", "long", TOKEN + "A")
    write("token", "padded-base64", TOKEN + "==")


# ---- json ----

JSON_SAMPLES = {
    "object": '{"order":42,"items":[{"sku":"a-1","qty":2}],"paid":true,"note":null}',
    "scalars": '[0,-0,1.5e3,-2E-7,"",true,false,null]',
    "escapes": r'"\"\\\/\b\f\n\r\t\u0041\u00e9\ud83d\ude00"',
    "utf8": '{"name":"\u00e9t\u00e9 \U0001f600"}',
    "bom": "\ufeff{}",
    "whitespace": ' \t\r\n{ "a" : [ 1 , 2 ] } \n',
    "deep": "[" * 64 + "]" * 64,
    "big-number": "1.7976931348623157e308",
    "huge-number": "1e400",
    "tiny-number": "1e-400",
    "long-int": "123456789012345678901234567890",
    "trailing-comma": "[1,2,]",
    "nul-after": '{}\x00garbage',
    "nul-inside": '"a\x00b"',
    "control-char": '"a\x01"',
    "lone-surrogate": r'"\ud800"',
    "bad-escape": r'"\x41"',
    "single-quote": "{'a':1}",
    "two-values": "{} {}",
    "empty": "",
}


def json_seeds():
    for name, text in JSON_SAMPLES.items():
        write("json", name, text)
    write("json", "invalid-utf8", b'"\xc3\x28"')
    write("json", "overlong-utf8", b'"\xc0\xaf"')


# ---- aws_request ----

def aws_bodies():
    """(target, body) pairs: every operation with a valid body, and near misses."""
    sfn = "AWSStepFunctions."
    tw = "TokenWheel."
    return {
        "create-activity": (sfn + "CreateActivity", {"name": "fuzz"}),
        "create-activity-bad-name": (sfn + "CreateActivity", {"name": "a b/c"}),
        "delete-activity": (sfn + "DeleteActivity", {"activityArn": ARN}),
        "describe-activity": (sfn + "DescribeActivity", {"activityArn": "not-an-arn"}),
        "list-activities": (sfn + "ListActivities", {"maxResults": 2, "nextToken": "x"}),
        "list-activities-too-many": (sfn + "ListActivities", {"maxResults": 1001}),
        "get-activity-task": (sfn + "GetActivityTask", {"activityArn": ARN, "workerName": "w1"}),
        "send-task-success": (sfn + "SendTaskSuccess", {"taskToken": TOKEN, "output": '{"ok":1}'}),
        "send-task-success-bad-output": (sfn + "SendTaskSuccess",
                                         {"taskToken": TOKEN, "output": "{"}),
        "send-task-failure": (sfn + "SendTaskFailure",
                              {"taskToken": TOKEN, "error": "E", "cause": "because"}),
        "send-task-heartbeat": (sfn + "SendTaskHeartbeat", {"taskToken": TOKEN}),
        "issue-task": (tw + "IssueTask", {"activityArn": ARN, "input": '{"n":1}',
                                          "timeoutSeconds": 60, "heartbeatSeconds": 10,
                                          "scheduleToStartSeconds": 5,
                                          "idempotencyKey": "k1", "correlation": "c1"}),
        "issue-task-negative": (tw + "IssueTask", {"timeoutSeconds": -1}),
        "issue-task-wrong-type": (tw + "IssueTask", {"input": {"n": 1}}),
        "issue-tasks": (tw + "IssueTasks", {"tasks": [{}, {"input": "[]"}, 7, [],
                                                      {"timeoutSeconds": 1e3}]}),
        "cancel-task": (tw + "CancelTask", {"taskToken": TOKEN}),
        "describe-task": (tw + "DescribeTask", {"taskToken": None}),
        "get-outcomes": (tw + "GetOutcomes", {"consumer": "c", "fromSequence": 1,
                                              "maxEvents": 10, "waitSeconds": 30}),
        "ack-outcomes": (tw + "AckOutcomes", {"consumer": "c", "sequence": 3}),
        "delete-consumer": (tw + "DeleteConsumer", {"consumer": "c"}),
        "stats": (tw + "Stats", {}),
    }


def aws_request_seeds():
    for name, (target, body) in aws_bodies().items():
        write("aws_request", name, target + "\n" + json.dumps(body))
    write("aws_request", "array-body", "AWSStepFunctions.SendTaskHeartbeat\n[1]")
    write("aws_request", "nul-body", "AWSStepFunctions.SendTaskHeartbeat\n{}\x00{")
    write("aws_request", "empty-body", "TokenWheel.Stats\n")
    write("aws_request", "unknown-target", "AWSStepFunctions.StartExecution\n{}")


# ---- HTTP: sigv4 and gateway ----

class PinnedDatetime(datetime.datetime):
    @classmethod
    def utcnow(cls):
        return START


def signed_request(target, body, date_header=False):
    """A SigV4-signed POST / as botocore signs it, as (headers, body)."""
    headers = {
        "Host": "localhost:8083",
        "X-Amz-Target": target,
        "Content-Type": "application/x-amz-json-1.0",
    }
    request = botocore.awsrequest.AWSRequest(
        method="POST", url="http://localhost:8083/", data=body.encode(), headers=headers)
    if date_header:
        request.headers["Date"] = "Tue, 14 Nov 2023 22:13:20 GMT"
    botocore.auth.datetime.datetime = PinnedDatetime
    credentials = botocore.credentials.Credentials(KEY_ID, SECRET)
    botocore.auth.SigV4Auth(credentials, "states", "us-east-1").add_auth(request)
    return list(request.headers.items()), body


def http_text(method, target, headers, body, line_end="\r\n"):
    head = method + " " + target + " HTTP/1.1" + line_end
    head += "".join(name + ": " + value + line_end for name, value in headers)
    return head + line_end + body


def post(target, body, extra=()):
    headers = [("Host", "localhost"), ("X-Amz-Target", target),
               ("Content-Type", "application/x-amz-json-1.0"),
               ("Content-Length", str(len(body.encode())))]
    return http_text("POST", "/", headers + list(extra), body)


def sigv4_seeds():
    headers, body = signed_request("AWSStepFunctions.SendTaskHeartbeat",
                                   json.dumps({"taskToken": TOKEN}))
    # sigv4_fuzz.cc reads LF-separated lines; its target is the request's raw target.
    write("sigv4", "heartbeat", http_text("POST", "/", headers, body, "\n"))
    headers, body = signed_request("AWSStepFunctions.SendTaskSuccess",
                                   json.dumps({"taskToken": TOKEN, "output": "{}"}))
    write("sigv4", "success", http_text("POST", "/", headers, body, "\n"))
    headers, body = signed_request("TokenWheel.Stats", "{}", date_header=True)
    write("sigv4", "date-header", http_text("POST", "/", headers, body, "\n"))
    write("sigv4", "missing-parts", http_text("POST", "/?a=1&b", [
        ("Host", "x"), ("Authorization", "AWS4-HMAC-SHA256 Credential=AKID/20231114")], "", "\n"))
    write("sigv4", "presigned", "GET /?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=x\n"
          "Host: x\n\n")


def gateway_seeds():
    for name, (target, body) in aws_bodies().items():
        write("gateway", name, "U" + post(target, json.dumps(body)))
    lifecycle = "".join([
        post("AWSStepFunctions.CreateActivity", json.dumps({"name": "fuzz"})),
        post("TokenWheel.IssueTask", json.dumps({"activityArn": ARN, "input": "{}"})),
        post("AWSStepFunctions.GetActivityTask", json.dumps({"activityArn": ARN})),
        post("TokenWheel.GetOutcomes", json.dumps({"consumer": "c", "maxEvents": 5})),
    ])
    write("gateway", "pipelined-lifecycle", "U" + lifecycle)
    write("gateway", "healthz-metrics",
          "UGET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    write("gateway", "chunked", "UPOST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: TokenWheel.Stats\r\n"
          "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
    write("gateway", "connection-close", "U" + post("TokenWheel.Stats", "{}",
                                                   [("Connection", "close")]))
    write("gateway", "http10", "UPOST / HTTP/1.0\r\nX-Amz-Target: TokenWheel.Stats\r\n\r\n")
    write("gateway", "not-found", "UDELETE /x HTTP/1.1\r\nHost: x\r\n\r\n")
    write("gateway", "truncated-body", "U" + post("TokenWheel.Stats", "{}")[:-1])
    headers, body = signed_request("AWSStepFunctions.SendTaskHeartbeat",
                                   json.dumps({"taskToken": TOKEN}))
    headers.append(("Content-Length", str(len(body))))
    write("gateway", "signed-heartbeat", "S" + http_text("POST", "/", headers, body))
    write("gateway", "unsigned-to-signed", "S" + post("TokenWheel.Stats", "{}"))


# ---- capnp: programs for capnp_fuzz.cc ----
# Methods by ordinal (rpc/tokenwheel.capnp); 21 = advance the clock.
(PING, GET_INFO, CREATE_ACTIVITY, DELETE_ACTIVITY, DESCRIBE_ACTIVITY, LIST_ACTIVITIES,
 ISSUE_TASK, ISSUE_TASKS, GET_ACTIVITY_TASK, SEND_TASK_SUCCESS, SEND_TASK_SUCCESSES,
 SEND_TASK_FAILURE, SEND_TASK_FAILURES, SEND_TASK_HEARTBEAT, SEND_TASK_HEARTBEATS, CANCEL_TASK,
 DESCRIBE_TASK, SUBSCRIBE, ACK_EVENTS, DELETE_CONSUMER, STATS, ADVANCE) = range(22)
# capnp_fuzz.cc's Dictionary() indices.
D_EMPTY, D_OBJ, D_JSON, D_NOT_JSON, D_ARN, D_ARN_PREFIX, D_FUZZ, D_CONSUMER = range(8)
D_TOKEN_OF_NO_TASK = 11


def step(method, *fields, wait=True):
    return bytes([method, 1 if wait else 0]) + b"".join(fields)


def null():
    return b"\x00"


def text(s):
    s = s.encode() if isinstance(s, str) else s
    return bytes([1, len(s)]) + s


def pool(i=0):
    return bytes([2, i])


def word(i):
    return bytes([3, i])


def num(v, width=4):
    return bytes([1, v]) if v < 256 else bytes([3]) + v.to_bytes(width, "big")


def issue_fields(arn=null(), input_=word(D_OBJ), timeout=num(0), heartbeat=num(0),
                 schedule=num(0), correlation=null(), key=null()):
    """An IssueTaskRequest's fields: a list item as it is (items have no presence byte)."""
    return arn + input_ + timeout + heartbeat + schedule + correlation + key


def issue(**fields):
    return b"\x01" + issue_fields(**fields)


def struct_of(*fields):
    """A struct field: present, then its fields."""
    return b"\x01" + b"".join(fields)


def advance(b):
    return bytes([ADVANCE, 1, b])


def capnp_seeds():
    write("capnp", "activity-lifecycle", b"".join([
        step(CREATE_ACTIVITY, word(D_FUZZ)),
        step(ISSUE_TASK, issue(arn=pool(), input_=word(D_JSON), correlation=text(b"\x00\xff"))),
        step(GET_ACTIVITY_TASK, pool(), text("w1"), num(0), wait=False),
        step(STATS),
        step(SEND_TASK_SUCCESS, struct_of(pool(), word(D_OBJ))),
        step(DESCRIBE_TASK, pool()),
    ]))
    write("capnp", "callback-timeouts", b"".join([
        step(ISSUE_TASK, issue(timeout=num(60), heartbeat=num(10))),
        step(SEND_TASK_HEARTBEAT, struct_of(pool())),
        advance(4),  # 61 s
        step(DESCRIBE_TASK, pool()),
        step(CANCEL_TASK, pool()),
    ]))
    write("capnp", "outcome-stream", b"".join([
        step(SUBSCRIBE, word(D_CONSUMER), num(0), b"\x01"),
        step(ISSUE_TASK, issue(key=text("k1"))),
        step(ISSUE_TASK, issue(key=text("k1"))),
        step(SEND_TASK_FAILURE, struct_of(pool(), text("E"), text("cause"))),
        step(ACK_EVENTS, word(D_CONSUMER), num(1)),
        step(DELETE_CONSUMER, word(D_CONSUMER)),
    ]))
    write("capnp", "batches", b"".join([
        # Lists: a length byte (n + 1), then the items' fields.
        step(ISSUE_TASKS, b"\x04" + issue_fields() + issue_fields(input_=word(D_NOT_JSON)) +
             issue_fields()),
        step(SEND_TASK_SUCCESSES, b"\x03" + pool(0) + word(D_OBJ) + pool(1) + null()),
        step(SEND_TASK_HEARTBEATS, b"\x02" + word(D_TOKEN_OF_NO_TASK)),
        step(SEND_TASK_FAILURES, b"\x02" + pool(2) + null() + null()),
        step(LIST_ACTIVITIES, num(2), null()),
    ]))
    write("capnp", "batch-too-long", step(ISSUE_TASKS, b"\x06"))
    write("capnp", "activity-errors", b"".join([
        step(PING, text(b"\x01\x02")),
        step(GET_INFO),
        step(CREATE_ACTIVITY, text("bad name")),
        step(DESCRIBE_ACTIVITY, word(D_ARN_PREFIX)),
        step(DELETE_ACTIVITY, word(D_ARN)),
        step(GET_ACTIVITY_TASK, word(D_ARN), null(), num(1)),
    ]))
    write("capnp", "schedule-to-start", b"".join([
        step(CREATE_ACTIVITY, word(D_FUZZ)),
        step(ISSUE_TASK, issue(arn=pool(), schedule=num(5), timeout=num(30))),
        advance(3),  # 5 s
        step(DESCRIBE_TASK, pool()),
        step(DELETE_ACTIVITY, pool()),
    ]))


def main():
    clear_seeds()
    token_seeds()
    json_seeds()
    aws_request_seeds()
    sigv4_seeds()
    gateway_seeds()
    capnp_seeds()
    return 0


if __name__ == "__main__":
    sys.exit(main())
