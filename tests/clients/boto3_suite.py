"""boto3 (Debian python3-boto3) as an unchanged worker against tokenwheeld's AWS gateway.

Every error is asserted as boto3 exposes it: botocore.exceptions.ClientError with
e.response["Error"]["Code"] / ["Message"] and the HTTP status; client-side checks as
botocore.exceptions.ParamValidationError. Tasks are issued, and outcomes read, with
TokenWheel.IssueTask / DescribeTask through harness.JsonApi.
"""

import contextlib
import datetime
import json

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import ClientError, ParamValidationError

import harness as h
from harness import expect, expect_eq


def make_client(endpoint, key_id=h.TEST_KEY_ID, secret=h.TEST_SECRET, signed=True):
    config = Config(region_name=h.REGION, proxies={},
                    signature_version=None if signed else botocore.UNSIGNED)
    return boto3.session.Session().client(
        "stepfunctions", endpoint_url=endpoint, region_name=h.REGION,
        aws_access_key_id=key_id, aws_secret_access_key=secret, config=config)


@contextlib.contextmanager
def client_error(code, message, status=400):
    try:
        yield
    except ClientError as e:
        got = (e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"],
               e.response["Error"]["Message"])
        expect_eq(got[:2], (status, code), f"ClientError (status, Code) of {got}")
        h.expect_message(got[2], message)
        return
    raise h.CheckFailed(f"expected ClientError {code}: {message!r}; the call succeeded")


@contextlib.contextmanager
def param_validation(fragment):
    try:
        yield
    except ParamValidationError as e:
        expect(fragment in str(e), f"ParamValidationError {str(e)!r} lacks {fragment!r}")
        return
    raise h.CheckFailed("expected botocore ParamValidationError; the call was sent")


def run(cases, ctx):
    sfn = make_client(ctx.open.endpoint)
    api = ctx.api_open
    st = {}

    # ---- activities ----
    def create_describe():
        r = sfn.create_activity(name="boto3-worker")
        arn = h.ARN_PREFIX + "boto3-worker"
        expect_eq(r["activityArn"], arn, "activityArn")
        expect(isinstance(r["creationDate"], datetime.datetime), "creationDate is parsed")
        again = sfn.create_activity(name="boto3-worker")
        expect_eq((again["activityArn"], again["creationDate"]),
                  (r["activityArn"], r["creationDate"]), "CreateActivity is idempotent")
        d = sfn.describe_activity(activityArn=arn)
        expect_eq((d["activityArn"], d["name"], d["creationDate"]),
                  (arn, "boto3-worker", r["creationDate"]), "DescribeActivity")
        st["arn"] = arn
    cases.run("create, re-create and describe an activity", create_describe, fatal=True)

    def list_paging():
        for i in range(1, 5):
            sfn.create_activity(name=f"boto3-page-{i}")
        everything = [a["name"] for a in sfn.list_activities(maxResults=1000)["activities"]]
        expect(len(everything) >= 5, f"ListActivities: {everything}")
        # By hand, one per page.
        names, token, pages = [], None, 0
        while True:
            kw = {"maxResults": 1}
            if token:
                kw["nextToken"] = token
            r = sfn.list_activities(**kw)
            pages += 1
            expect_eq(len(r["activities"]), 1, f"page {pages} size")
            names += [a["name"] for a in r["activities"]]
            token = r.get("nextToken")
            if not token:
                break
            expect(pages <= len(everything), "paging does not end")
        expect_eq(names, everything, "names paged by hand")
        # boto3's own paginator, page size 1.
        pager = sfn.get_paginator("list_activities")
        pages = list(pager.paginate(PaginationConfig={"PageSize": 1}))
        expect_eq(len(pages), len(everything), "paginator pages")
        expect_eq([a["name"] for p in pages for a in p["activities"]], everything,
                  "names from the paginator")
        with client_error("InvalidToken", h.MSG_INVALID_TOKEN):
            sfn.list_activities(maxResults=1, nextToken="not-a-next-token")
        with client_error("ValidationException",
                          "1 validation error detected: Value '1001' at 'maxResults' failed to "
                          "satisfy constraint: Member must have value less than or equal to 1000"):
            sfn.list_activities(maxResults=1001)
    cases.run("ListActivities paged with maxResults 1, by hand and by the paginator", list_paging)

    def bad_names_and_arns():
        for name in ["bad name", "semi;colon", "n" * 81]:
            with client_error("InvalidName", h.invalid_name(name)):
                sfn.create_activity(name=name)
        with param_validation("Invalid length for parameter name"):
            sfn.create_activity(name="")
        bad = "not-an-arn"
        with client_error("InvalidArn", h.invalid_arn(bad)):
            sfn.describe_activity(activityArn=bad)
        with client_error("InvalidArn", h.invalid_arn(bad)):
            sfn.delete_activity(activityArn=bad)
        with client_error("InvalidArn", h.invalid_arn(bad)):
            sfn.get_activity_task(activityArn=bad)
        long_arn = "arn:" + "x" * 253
        with client_error("ValidationException", h.too_long("activityArn", 256)):
            sfn.describe_activity(activityArn=long_arn)
        unknown = h.ARN_PREFIX + "boto3-never-created"
        with client_error("ActivityDoesNotExist", h.activity_does_not_exist(unknown)):
            sfn.describe_activity(activityArn=unknown)
        with client_error("ActivityDoesNotExist", h.activity_does_not_exist(unknown)):
            sfn.get_activity_task(activityArn=unknown, workerName="w")
    cases.run("invalid names, invalid ARNs, unknown activity", bad_names_and_arns)

    # ---- the worker loop ----
    def empty_poll():
        r = sfn.get_activity_task(activityArn=st["arn"], workerName="boto3-worker")
        expect("taskToken" not in r, f"an empty poll returned a token: {r}")
    cases.run("empty poll returns no token", empty_poll)

    def success_path():
        token = api.issue(st["arn"], {"job": "square", "n": 7}, timeoutSeconds=60,
                          heartbeatSeconds=30)
        r = sfn.get_activity_task(activityArn=st["arn"], workerName="boto3-worker")
        expect_eq(r.get("taskToken"), token, "the polled token")
        n = json.loads(r["input"])["n"]
        sfn.send_task_heartbeat(taskToken=r["taskToken"])
        expect_eq(api.describe(token)["state"], "STARTED", "state after the heartbeat")
        sfn.send_task_success(taskToken=r["taskToken"], output=json.dumps({"square": n * n}))
        d = api.describe(token)
        expect_eq((d["state"], json.loads(d["output"]), d.get("worker")),
                  ("SUCCEEDED", {"square": 49}, "boto3-worker"), "DescribeTask")
        st["done"] = token
    cases.run("poll -> heartbeat -> success, verified with DescribeTask", success_path, fatal=True)

    def failure_path():
        token = api.issue(st["arn"], {"job": "fail"})
        r = sfn.get_activity_task(activityArn=st["arn"], workerName="boto3-worker")
        expect_eq(r.get("taskToken"), token, "the polled token")
        sfn.send_task_failure(taskToken=token, error="Worker.Bad", cause="no such job: fail")
        d = api.describe(token)
        expect_eq((d["state"], d.get("error"), d.get("cause")),
                  ("FAILED", "Worker.Bad", "no such job: fail"), "DescribeTask")
        # Neither error nor cause is fine too.
        token2 = api.issue(st["arn"], {})
        sfn.get_activity_task(activityArn=st["arn"])
        sfn.send_task_failure(taskToken=token2)
        expect_eq(api.describe(token2)["state"], "FAILED", "a bare failure")
    cases.run("poll -> failure with error and cause", failure_path)

    def second_completion():
        token = st["done"]
        with client_error("TaskTimedOut", h.MSG_TASK_GONE):
            sfn.send_task_success(taskToken=token, output='{"again": true}')
        with client_error("TaskTimedOut", h.MSG_TASK_GONE):
            sfn.send_task_failure(taskToken=token, error="Late")
        with client_error("TaskTimedOut", h.MSG_TASK_GONE):
            sfn.send_task_heartbeat(taskToken=token)
        expect_eq(json.loads(api.describe(token)["output"]), {"square": 49},
                  "the first success stands")
    cases.run("a second success / failure / heartbeat: TaskTimedOut", second_completion)

    def forged():
        done = st["done"]
        # A made-up token, and a real one with its MAC changed.
        tampered = done[:-2] + ("AA" if done[-2:] != "AA" else "BB")
        for call in (lambda t: sfn.send_task_success(taskToken=t, output="{}"),
                     lambda t: sfn.send_task_failure(taskToken=t, error="E"),
                     lambda t: sfn.send_task_heartbeat(taskToken=t)):
            for t in ("forged-token", tampered):
                with client_error("InvalidToken", h.MSG_INVALID_TOKEN):
                    call(t)
    cases.run("forged tokens: InvalidToken", forged)

    def limits():
        token = api.issue(st["arn"], {"job": "limits"})
        sfn.get_activity_task(activityArn=st["arn"])
        with client_error("ValidationException", h.too_long("output", h.PAYLOAD_BYTES_MAX)):
            sfn.send_task_success(taskToken=token,
                                  output=h.json_string_of_bytes(h.PAYLOAD_BYTES_MAX + 1))
        with client_error("InvalidOutput", h.INVALID_JSON_OUTPUT):
            sfn.send_task_success(taskToken=token, output="not json")
        with client_error("ValidationException", h.too_long("error", 256)):
            sfn.send_task_failure(taskToken=token, error="e" * 257)
        with client_error("ValidationException", h.too_long("cause", 32768)):
            sfn.send_task_failure(taskToken=token, cause="c" * 32769)
        with client_error("ValidationException", h.too_long("taskToken", 2048)):
            sfn.send_task_heartbeat(taskToken="t" * 2049)
        with param_validation("Invalid length for parameter taskToken"):
            sfn.send_task_heartbeat(taskToken="")
        with client_error("ValidationException", h.too_long("workerName", 80)):
            sfn.get_activity_task(activityArn=st["arn"], workerName="w" * 81)
        # A request past 1 MB (SEMANTICS.md: "ValidationException / 413"): refused whole, once
        # (no retry), with a code boto3 can read.
        try:
            sfn.send_task_success(taskToken=token, output=h.json_string_of_bytes(1100000))
            raise h.CheckFailed("a 1.1 MB request was accepted")
        except ClientError as e:
            meta, err = e.response["ResponseMetadata"], e.response["Error"]
            expect_eq((meta["HTTPStatusCode"], meta["RetryAttempts"]), (413, 0), f"{err}")
            expect_eq(err["Code"], "ValidationException", f"{err}")
            expect("1048576" in err["Message"], f"{err}")
        expect_eq(api.describe(token)["state"], "STARTED", "refused calls change nothing")
        # Exactly at the limit is accepted.
        big = h.json_string_of_bytes(h.PAYLOAD_BYTES_MAX)
        sfn.send_task_success(taskToken=token, output=big)
        expect_eq(len(api.describe(token)["output"]), h.PAYLOAD_BYTES_MAX, "stored output")
    cases.run("oversize output (262145 bytes), bad JSON, long error/cause/token/workerName",
              limits)

    def missing_members():
        with param_validation('Missing required parameter in input: "output"'):
            sfn.send_task_success(taskToken=st["done"])
        with param_validation('Missing required parameter in input: "taskToken"'):
            sfn.send_task_heartbeat()
        with param_validation('Missing required parameter in input: "activityArn"'):
            sfn.get_activity_task()
        # What boto3 refuses to send, sent signed by botocore's SigV4Auth to the server that
        # checks signatures.
        raw = ctx.api_auth
        with h.expect_api_error("ValidationException", h.must_not_be_null("output")):
            raw.aws("SendTaskSuccess", taskToken=st["done"])
        with h.expect_api_error("ValidationException",
                                h.must_not_be_null("taskToken", "output")):
            raw.aws("SendTaskSuccess")
        with h.expect_api_error("ValidationException", h.must_not_be_null("name")):
            raw.aws("CreateActivity")
        with h.expect_api_error("ValidationException", h.must_not_be_null("activityArn")):
            raw.aws("GetActivityTask", workerName="w")
    cases.run("missing members: ParamValidationError in boto3, ValidationException raw",
              missing_members)

    def heartbeat_timeout():
        token = api.issue(st["arn"], {"job": "slow"}, timeoutSeconds=120, heartbeatSeconds=1)
        r = sfn.get_activity_task(activityArn=st["arn"], workerName="boto3-slow")
        expect_eq(r.get("taskToken"), token, "the polled token")
        d = api.wait_state(token, "TIMED_OUT", bound_s=15)
        expect_eq(d.get("timeoutReason"), "heartbeat", "timeoutReason")
        with client_error("TaskTimedOut", h.MSG_TASK_GONE):
            sfn.send_task_success(taskToken=token, output='{"late": true}')
        with client_error("TaskTimedOut", h.MSG_TASK_GONE):
            sfn.send_task_heartbeat(taskToken=token)
    cases.run("late success after a heartbeat timeout: TaskTimedOut", heartbeat_timeout)

    def delete_activity():
        r = sfn.create_activity(name="boto3-doomed")
        arn = r["activityArn"]
        queued = api.issue(arn, {"never": "polled"})
        sfn.delete_activity(activityArn=arn)
        sfn.delete_activity(activityArn=arn)  # twice is fine
        d = api.describe(queued)
        expect_eq((d["state"], d.get("error"), d.get("cause")),
                  ("FAILED", "States.Runtime", f"The activity {arn} does not exist."),
                  "the queued task of a deleted activity")
        with client_error("ActivityDoesNotExist", h.activity_does_not_exist(arn)):
            sfn.describe_activity(activityArn=arn)
        with client_error("ActivityDoesNotExist", h.activity_does_not_exist(arn)):
            sfn.get_activity_task(activityArn=arn)
        names = [a["name"] for a in sfn.list_activities()["activities"]]
        expect("boto3-doomed" not in names, "deleted activity still listed")
    cases.run("delete an activity (twice); its queued task fails", delete_activity)

    # ---- the server with --aws-credentials ----
    good = make_client(ctx.auth.endpoint)

    def signed_worker():
        arn = good.create_activity(name="boto3-signed")["activityArn"]
        token = ctx.api_auth.issue(arn, {"signed": True})
        r = good.get_activity_task(activityArn=arn, workerName="boto3-signed")
        expect_eq(r.get("taskToken"), token, "the polled token")
        good.send_task_heartbeat(taskToken=token)
        good.send_task_success(taskToken=token, output='{"ok": true}')
        expect_eq(ctx.api_auth.describe(token)["state"], "SUCCEEDED", "state")
        st["auth_arn"] = arn
        expect("taskToken" not in good.get_activity_task(activityArn=arn), "empty poll")
        expect(any(a["name"] == "boto3-signed" for a in good.list_activities()["activities"]),
               "listed")
    cases.run("signed worker loop against a server with --aws-credentials", signed_worker)

    def unknown_task():
        with client_error("TaskDoesNotExist", h.MSG_TASK_DOES_NOT_EXIST):
            good.send_task_success(taskToken=ctx.foreign_token, output="{}")
        with client_error("TaskDoesNotExist", h.MSG_TASK_DOES_NOT_EXIST):
            good.send_task_heartbeat(taskToken=ctx.foreign_token)
    cases.run("a well-formed token of an unknown task: TaskDoesNotExist", unknown_task)

    def wrong_secret():
        bad = make_client(ctx.auth.endpoint, secret=h.WRONG_SECRET)
        with client_error("InvalidSignatureException", h.MSG_BAD_SIGNATURE):
            bad.list_activities()
        with client_error("InvalidSignatureException", h.MSG_BAD_SIGNATURE):
            bad.send_task_success(taskToken="any", output='{"a": 1}')
    cases.run("wrong secret: InvalidSignatureException", wrong_secret)

    def unknown_key():
        bad = make_client(ctx.auth.endpoint, key_id=h.UNKNOWN_KEY_ID)
        with client_error("UnrecognizedClientException", h.MSG_UNKNOWN_KEY):
            bad.list_activities()
        with client_error("UnrecognizedClientException", h.MSG_UNKNOWN_KEY):
            bad.get_activity_task(activityArn=st.get("auth_arn", h.ARN_PREFIX + "x"))
    cases.run("unknown access key: UnrecognizedClientException", unknown_key)

    def unsigned_and_expired():
        anon = make_client(ctx.auth.endpoint, signed=False)
        with client_error("MissingAuthenticationTokenException", h.MSG_MISSING_AUTH):
            anon.list_activities()
        # Signed 20 minutes ago (past the 15 minutes AWS allows).
        then = datetime.datetime.utcnow() - datetime.timedelta(minutes=20)
        try:
            ctx.api_auth.call("AWSStepFunctions.ListActivities", {}, signing_time=then)
            raise h.CheckFailed("an expired signature was accepted")
        except h.ApiError as e:
            expect_eq((e.status, e.code), (400, "InvalidSignatureException"), "expired")
            stamp = then.strftime("%Y%m%dT%H%M%SZ")
            expect(e.message.startswith(f"Signature expired: {stamp} is now earlier than "),
                   f"expired message: {e.message!r}")
            expect(e.message.endswith(" - 15 min.)"), f"expired message: {e.message!r}")
    cases.run("unsigned request and expired signature", unsigned_and_expired)

    def tampered_requests():
        # What no SDK sends, by botocore's signer and then a change: the signature covers the
        # body, and a header without its Signature part is IncompleteSignature.
        def other_body(headers, data):
            changed = data.replace(b'"taskToken": "t"', b'"taskToken": "u"')
            expect(changed != data, f"the body did not change: {data!r}")
            return headers, changed
        with h.expect_api_error("InvalidSignatureException", h.MSG_BAD_SIGNATURE):
            ctx.api_auth.call("AWSStepFunctions.SendTaskSuccess",
                              {"taskToken": "t", "output": "{}"}, tamper=other_body)
        seen = {}

        def no_signature(headers, data):
            auth = headers["Authorization"]
            cut = auth.index(", Signature=")
            seen["auth"] = auth[:cut]
            headers["Authorization"] = seen["auth"]
            return headers, data
        try:
            ctx.api_auth.call("AWSStepFunctions.ListActivities", {}, tamper=no_signature)
            raise h.CheckFailed("a request without a Signature was accepted")
        except h.ApiError as e:
            expect_eq((e.status, e.code, e.message),
                      (400, "IncompleteSignature",
                       "Authorization header requires 'Signature' parameter. "
                       f"Authorization={seen['auth']}"), "no Signature part")
    cases.run("a body changed after signing; no Signature part", tampered_requests)
