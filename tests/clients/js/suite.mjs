// The AWS SDK for JavaScript v3 (@aws-sdk/client-sfn, pinned by package-lock.json) as an
// unchanged worker against tokenwheeld's AWS gateway. Started by
// tests/clients/run_clients.py --client js, which starts the servers and passes them in:
//   TW_OPEN_ENDPOINT  a server without credentials (the worker loop and every service error)
//   TW_AUTH_ENDPOINT  a server with --aws-credentials listing TW_KEY_ID / TW_SECRET
//   TW_WRONG_SECRET, TW_UNKNOWN_KEY_ID  for the authentication errors
//   TW_FOREIGN_TOKEN  a token of the open server: well formed on the auth server, task unknown
// Prints "[js] PASS|FAIL <case> (<seconds> s)" per case; exits 1 if any failed.
//
// Errors are asserted as the SDK exposes them: the thrown exception's .name (the code, which the
// SDK reads from X-Amzn-ErrorType first), .message, and $metadata.httpStatusCode. Tasks are
// issued with TokenWheel.IssueTask, signed with the SDK's own SigV4 signer.
import http from "node:http";
import assert from "node:assert/strict";

import {
  SFNClient,
  CreateActivityCommand,
  DeleteActivityCommand,
  DescribeActivityCommand,
  ListActivitiesCommand,
  GetActivityTaskCommand,
  SendTaskSuccessCommand,
  SendTaskFailureCommand,
  SendTaskHeartbeatCommand,
  paginateListActivities,
} from "@aws-sdk/client-sfn";
import { SignatureV4 } from "@smithy/signature-v4";
import { Hash } from "@smithy/hash-node";

const env = process.env;
const REGION = "us-east-1";
const ARN_PREFIX = `arn:aws:states:${REGION}:000000000000:activity:`;
const KEY = { accessKeyId: env.TW_KEY_ID, secretAccessKey: env.TW_SECRET };

// SEMANTICS.md, "Exact AWS texts" and "Authentication errors".
const MSG = {
  invalidToken: "Invalid Token: 'Invalid token'",
  taskGone: "Task Timed Out: 'Provided task does not exist anymore'",
  taskDoesNotExist: "Task Does Not Exist: 'Provided task does not exist'",
  badSignature:
    "The request signature we calculated does not match the signature you provided. Check your " +
    "AWS Secret Access Key and signing method. Consult the service documentation for details.",
  unknownKey: "The security token included in the request is invalid.",
  missingAuth: "Missing Authentication Token",
};
const invalidName = (n) => `Invalid Name: '${n}'`;
const invalidArn = (a) => `Invalid Arn: 'Invalid ARN prefix: ${a}'`;
const activityDoesNotExist = (a) => `Activity Does Not Exist: '${a}'`;
const tooLong = (field, n) =>
  `1 validation error detected: Value at '${field}' failed to satisfy constraint: ` +
  `Member must have length less than or equal to ${n}`;
const tooShort = (field) =>
  `1 validation error detected: Value at '${field}' failed to satisfy constraint: ` +
  `Member must have length greater than or equal to 1`;
const mustNotBeNull = (...fields) => {
  const parts = fields.map(
    (f) => `Value at '${f}' failed to satisfy constraint: Member must not be null`);
  const head = parts.length === 1 ? "1 validation error detected: "
                                  : `${parts.length} validation errors detected: `;
  return head + parts.join("; ");
};
const PAYLOAD_BYTES_MAX = 262144;
const jsonStringOfBytes = (n) => '"' + "x".repeat(n - 2) + '"';

function sfn(endpoint, options = {}) {
  return new SFNClient({ endpoint, region: REGION, credentials: KEY, ...options });
}

// ---- TokenWheel.* over the same wire, signed like the SDK signs ----

async function twCall(endpoint, op, body, credentials = null) {
  const url = new URL(endpoint);
  let request = {
    method: "POST",
    protocol: url.protocol,
    hostname: url.hostname,
    port: Number(url.port),
    path: "/",
    query: {},
    headers: {
      host: url.host,
      "content-type": "application/x-amz-json-1.0",
      "x-amz-target": `TokenWheel.${op}`,
    },
    body: JSON.stringify(body),
  };
  if (credentials) {
    const signer = new SignatureV4({
      service: "states", region: REGION, credentials, sha256: Hash.bind(null, "sha256"),
    });
    request = await signer.sign(request);
  }
  const { status, text } = await new Promise((resolve, reject) => {
    const req = http.request(
      { host: url.hostname, port: url.port, method: "POST", path: "/", headers: request.headers },
      (res) => {
        let data = "";
        res.setEncoding("utf8");
        res.on("data", (c) => (data += c));
        res.on("end", () => resolve({ status: res.statusCode, text: data }));
      });
    req.on("error", reject);
    req.setTimeout(60000, () => req.destroy(new Error("TokenWheel call timed out")));
    req.end(request.body);
  });
  const doc = text ? JSON.parse(text) : {};
  if (status !== 200) throw new Error(`TokenWheel.${op}: HTTP ${status} ${text}`);
  return doc;
}

// ---- checks ----

async function expectError(promise, code, message, status = 400) {
  let error;
  try {
    await promise;
  } catch (e) {
    error = e;
  }
  assert.ok(error, `expected ${code}: ${message}; the call succeeded`);
  assert.equal(error.name, code, `exception name (message: ${error.message})`);
  if (message instanceof RegExp) assert.match(error.message, message);
  else assert.equal(error.message, message, "exception message");
  assert.equal(error.$metadata?.httpStatusCode, status, "$metadata.httpStatusCode");
  assert.equal(error.$fault, status < 500 ? "client" : "server", "$fault");
  return error;
}

const results = [];
async function run(name, fn) {
  const t0 = performance.now();
  let ok = true;
  let detail = "";
  try {
    await fn();
  } catch (e) {
    ok = false;
    detail = e?.stack ?? String(e);
  }
  const s = ((performance.now() - t0) / 1000).toFixed(2);
  results.push(ok);
  console.log(`[js] ${ok ? "PASS" : "FAIL"} ${name} (${s} s)`);
  if (!ok) console.log("    " + detail.replaceAll("\n", "\n    "));
  return ok;
}

async function waitState(endpoint, token, state, boundS, credentials = null) {
  const deadline = Date.now() + boundS * 1000;
  for (;;) {
    const d = await twCall(endpoint, "DescribeTask", { taskToken: token }, credentials);
    if (d.state === state) return d;
    assert.ok(Date.now() < deadline, `task not ${state} within ${boundS} s: ${JSON.stringify(d)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// ---- the suite ----

const OPEN = env.TW_OPEN_ENDPOINT;
const AUTH = env.TW_AUTH_ENDPOINT;
const client = sfn(OPEN);
const issue = async (arn, input, extra = {}) =>
  (await twCall(OPEN, "IssueTask", { activityArn: arn, input: JSON.stringify(input), ...extra }))
    .taskToken;
const describe = (token) => twCall(OPEN, "DescribeTask", { taskToken: token });
const st = {};

const setup = await run("create, re-create and describe an activity", async () => {
  const r = await client.send(new CreateActivityCommand({ name: "js-worker" }));
  st.arn = ARN_PREFIX + "js-worker";
  assert.equal(r.activityArn, st.arn);
  assert.ok(r.creationDate instanceof Date, "creationDate is a Date");
  assert.equal(r.$metadata.httpStatusCode, 200);
  const again = await client.send(new CreateActivityCommand({ name: "js-worker" }));
  assert.equal(again.creationDate.getTime(), r.creationDate.getTime(), "idempotent");
  const d = await client.send(new DescribeActivityCommand({ activityArn: st.arn }));
  assert.deepEqual([d.activityArn, d.name, d.creationDate.getTime()],
                   [st.arn, "js-worker", r.creationDate.getTime()]);
});

await run("ListActivities paged with maxResults 1, by hand and by the paginator", async () => {
  for (let i = 1; i <= 4; i++) {
    await client.send(new CreateActivityCommand({ name: `js-page-${i}` }));
  }
  const all = (await client.send(new ListActivitiesCommand({ maxResults: 1000 })))
    .activities.map((a) => a.name);
  assert.equal(all.length, 5, `activities: ${all}`);
  const names = [];
  let nextToken;
  let pages = 0;
  do {
    const r = await client.send(new ListActivitiesCommand({ maxResults: 1, nextToken }));
    pages++;
    assert.equal(r.activities.length, 1, `page ${pages} size`);
    names.push(...r.activities.map((a) => a.name));
    nextToken = r.nextToken;
    assert.ok(pages <= all.length, "paging does not end");
  } while (nextToken);
  assert.deepEqual(names, all, "names paged by hand");
  const paged = [];
  pages = 0;
  for await (const page of paginateListActivities({ client, pageSize: 1 }, {})) {
    pages++;
    paged.push(...page.activities.map((a) => a.name));
  }
  assert.deepEqual(paged, all, "names from paginateListActivities");
  assert.ok(pages >= all.length, `paginator pages: ${pages}`);
  await expectError(client.send(new ListActivitiesCommand({ nextToken: "not-a-next-token" })),
                    "InvalidToken", MSG.invalidToken);
  await expectError(
    client.send(new ListActivitiesCommand({ maxResults: 1001 })), "ValidationException",
    "1 validation error detected: Value '1001' at 'maxResults' failed to satisfy constraint: " +
      "Member must have value less than or equal to 1000");
});

await run("invalid names, invalid ARNs, unknown activity", async () => {
  // The empty name too (SEMANTICS.md: 1..80 chars, else InvalidName); boto3 and the CLI refuse
  // to send it.
  for (const name of ["bad name", "brace{", "n".repeat(81), ""]) {
    await expectError(client.send(new CreateActivityCommand({ name })),
                      "InvalidName", invalidName(name));
  }
  const bad = "not-an-arn";
  await expectError(client.send(new DescribeActivityCommand({ activityArn: bad })),
                    "InvalidArn", invalidArn(bad));
  await expectError(client.send(new DeleteActivityCommand({ activityArn: bad })),
                    "InvalidArn", invalidArn(bad));
  await expectError(client.send(new GetActivityTaskCommand({ activityArn: bad })),
                    "InvalidArn", invalidArn(bad));
  const unknown = ARN_PREFIX + "js-never-created";
  await expectError(client.send(new DescribeActivityCommand({ activityArn: unknown })),
                    "ActivityDoesNotExist", activityDoesNotExist(unknown));
  await expectError(client.send(new GetActivityTaskCommand({ activityArn: unknown })),
                    "ActivityDoesNotExist", activityDoesNotExist(unknown));
});

if (setup) {
  await run("empty poll returns no token", async () => {
    const r = await client.send(new GetActivityTaskCommand({ activityArn: st.arn }));
    assert.equal(r.taskToken, undefined, `an empty poll returned ${JSON.stringify(r)}`);
    assert.equal(r.$metadata.httpStatusCode, 200);
  });

  await run("poll -> heartbeat -> success, verified with DescribeTask", async () => {
    const token = await issue(st.arn, { words: ["a", "b"] }, { timeoutSeconds: 60,
                                                               heartbeatSeconds: 30 });
    const r = await client.send(
      new GetActivityTaskCommand({ activityArn: st.arn, workerName: "js-worker" }));
    assert.equal(r.taskToken, token);
    const { words } = JSON.parse(r.input);
    await client.send(new SendTaskHeartbeatCommand({ taskToken: token }));
    await client.send(new SendTaskSuccessCommand({
      taskToken: token, output: JSON.stringify({ joined: words.join("+") }) }));
    const d = await describe(token);
    assert.deepEqual([d.state, JSON.parse(d.output), d.worker],
                     ["SUCCEEDED", { joined: "a+b" }, "js-worker"]);
    st.done = token;
  });

  await run("poll -> failure with error and cause", async () => {
    const token = await issue(st.arn, { words: null });
    const r = await client.send(new GetActivityTaskCommand({ activityArn: st.arn }));
    assert.equal(r.taskToken, token);
    await client.send(new SendTaskFailureCommand({
      taskToken: token, error: "TypeError", cause: "words must be a list" }));
    const d = await describe(token);
    assert.deepEqual([d.state, d.error, d.cause], ["FAILED", "TypeError", "words must be a list"]);
  });

  await run("a second success / failure / heartbeat: TaskTimedOut", async () => {
    await expectError(client.send(new SendTaskSuccessCommand({ taskToken: st.done, output: "1" })),
                      "TaskTimedOut", MSG.taskGone);
    await expectError(client.send(new SendTaskFailureCommand({ taskToken: st.done })),
                      "TaskTimedOut", MSG.taskGone);
    await expectError(client.send(new SendTaskHeartbeatCommand({ taskToken: st.done })),
                      "TaskTimedOut", MSG.taskGone);
    assert.equal((await describe(st.done)).state, "SUCCEEDED");
  });

  await run("forged tokens: InvalidToken", async () => {
    const forged = st.done.slice(0, -2) + (st.done.endsWith("AA") ? "BB" : "AA");
    for (const t of ["forged-token", forged]) {
      await expectError(client.send(new SendTaskSuccessCommand({ taskToken: t, output: "{}" })),
                        "InvalidToken", MSG.invalidToken);
      await expectError(client.send(new SendTaskFailureCommand({ taskToken: t })),
                        "InvalidToken", MSG.invalidToken);
      await expectError(client.send(new SendTaskHeartbeatCommand({ taskToken: t })),
                        "InvalidToken", MSG.invalidToken);
    }
  });

  await run("oversize output (262145 bytes), bad JSON, long error/cause/token/workerName",
            async () => {
    const token = await issue(st.arn, {});
    await client.send(new GetActivityTaskCommand({ activityArn: st.arn }));
    await expectError(client.send(new SendTaskSuccessCommand({
      taskToken: token, output: jsonStringOfBytes(PAYLOAD_BYTES_MAX + 1) })),
                      "ValidationException", tooLong("output", PAYLOAD_BYTES_MAX));
    await expectError(client.send(new SendTaskSuccessCommand({ taskToken: token, output: "{" })),
                      "InvalidOutput", /^Invalid Output: 'Invalid JSON.*'$/);
    await expectError(client.send(new SendTaskFailureCommand({
      taskToken: token, error: "e".repeat(257) })), "ValidationException", tooLong("error", 256));
    await expectError(client.send(new SendTaskFailureCommand({
      taskToken: token, cause: "c".repeat(32769) })), "ValidationException",
                      tooLong("cause", 32768));
    await expectError(client.send(new SendTaskHeartbeatCommand({ taskToken: "t".repeat(2049) })),
                      "ValidationException", tooLong("taskToken", 2048));
    await expectError(client.send(new SendTaskHeartbeatCommand({ taskToken: "" })),
                      "ValidationException", tooShort("taskToken"));
    await expectError(client.send(new GetActivityTaskCommand({
      activityArn: st.arn, workerName: "w".repeat(81) })), "ValidationException",
                      tooLong("workerName", 80));
    // A request past 1 MB (SEMANTICS.md: "ValidationException / 413"): refused whole.
    const huge = await client.send(new SendTaskSuccessCommand({
      taskToken: token, output: jsonStringOfBytes(1100000) })).catch((e) => e);
    assert.equal(huge.$metadata?.httpStatusCode, 413, String(huge));
    assert.ok(["ValidationException", "SerializationException"].includes(huge.name), huge.name);
    assert.match(huge.message, /1048576/);
    assert.equal((await describe(token)).state, "STARTED", "refused calls change nothing");
    await client.send(new SendTaskSuccessCommand({
      taskToken: token, output: jsonStringOfBytes(PAYLOAD_BYTES_MAX) }));
    assert.equal((await describe(token)).output.length, PAYLOAD_BYTES_MAX, "stored output");
  });

  // The JavaScript SDK v3 does not check required members before sending: the server answers.
  await run("missing members, sent by the SDK: ValidationException", async () => {
    await expectError(client.send(new SendTaskSuccessCommand({ taskToken: st.done })),
                      "ValidationException", mustNotBeNull("output"));
    await expectError(client.send(new SendTaskSuccessCommand({})),
                      "ValidationException", mustNotBeNull("taskToken", "output"));
    await expectError(client.send(new SendTaskFailureCommand({})),
                      "ValidationException", mustNotBeNull("taskToken"));
    await expectError(client.send(new SendTaskHeartbeatCommand({})),
                      "ValidationException", mustNotBeNull("taskToken"));
    await expectError(client.send(new GetActivityTaskCommand({ workerName: "w" })),
                      "ValidationException", mustNotBeNull("activityArn"));
    await expectError(client.send(new CreateActivityCommand({})),
                      "ValidationException", mustNotBeNull("name"));
    await expectError(client.send(new DescribeActivityCommand({})),
                      "ValidationException", mustNotBeNull("activityArn"));
  });

  await run("late success after a heartbeat timeout: TaskTimedOut", async () => {
    const token = await issue(st.arn, { slow: true }, { timeoutSeconds: 120,
                                                        heartbeatSeconds: 1 });
    const r = await client.send(
      new GetActivityTaskCommand({ activityArn: st.arn, workerName: "js-slow" }));
    assert.equal(r.taskToken, token);
    const d = await waitState(OPEN, token, "TIMED_OUT", 15);
    assert.equal(d.timeoutReason, "heartbeat");
    await expectError(client.send(new SendTaskSuccessCommand({ taskToken: token, output: "{}" })),
                      "TaskTimedOut", MSG.taskGone);
    await expectError(client.send(new SendTaskHeartbeatCommand({ taskToken: token })),
                      "TaskTimedOut", MSG.taskGone);
  });

  await run("delete an activity (twice); its queued task fails", async () => {
    const { activityArn } = await client.send(new CreateActivityCommand({ name: "js-doomed" }));
    const queued = await issue(activityArn, {});
    const r = await client.send(new DeleteActivityCommand({ activityArn }));
    assert.equal(r.$metadata.httpStatusCode, 200);
    await client.send(new DeleteActivityCommand({ activityArn }));
    const d = await describe(queued);
    assert.deepEqual([d.state, d.error, d.cause],
                     ["FAILED", "States.Runtime", `The activity ${activityArn} does not exist.`]);
    await expectError(client.send(new DescribeActivityCommand({ activityArn })),
                      "ActivityDoesNotExist", activityDoesNotExist(activityArn));
    await expectError(client.send(new GetActivityTaskCommand({ activityArn })),
                      "ActivityDoesNotExist", activityDoesNotExist(activityArn));
  });
}

// ---- the server with --aws-credentials ----

const good = sfn(AUTH);

await run("signed worker loop against a server with --aws-credentials", async () => {
  const { activityArn } = await good.send(new CreateActivityCommand({ name: "js-signed" }));
  const token = (await twCall(AUTH, "IssueTask",
                              { activityArn, input: '{"signed":true}' }, KEY)).taskToken;
  const r = await good.send(
    new GetActivityTaskCommand({ activityArn, workerName: "js-signed" }));
  assert.equal(r.taskToken, token);
  await good.send(new SendTaskHeartbeatCommand({ taskToken: token }));
  await good.send(new SendTaskSuccessCommand({ taskToken: token, output: '{"ok":true}' }));
  const d = await twCall(AUTH, "DescribeTask", { taskToken: token }, KEY);
  assert.equal(d.state, "SUCCEEDED");
  const empty = await good.send(new GetActivityTaskCommand({ activityArn }));
  assert.equal(empty.taskToken, undefined);
});

await run("a well-formed token of an unknown task: TaskDoesNotExist", async () => {
  await expectError(good.send(new SendTaskSuccessCommand({
    taskToken: env.TW_FOREIGN_TOKEN, output: "{}" })), "TaskDoesNotExist", MSG.taskDoesNotExist);
  await expectError(good.send(new SendTaskHeartbeatCommand({ taskToken: env.TW_FOREIGN_TOKEN })),
                    "TaskDoesNotExist", MSG.taskDoesNotExist);
});

await run("wrong secret: InvalidSignatureException", async () => {
  const bad = sfn(AUTH, { credentials: { ...KEY, secretAccessKey: env.TW_WRONG_SECRET } });
  await expectError(bad.send(new ListActivitiesCommand({})),
                    "InvalidSignatureException", MSG.badSignature);
  await expectError(bad.send(new SendTaskSuccessCommand({ taskToken: "t", output: '{"a":1}' })),
                    "InvalidSignatureException", MSG.badSignature);
});

await run("unknown access key: UnrecognizedClientException", async () => {
  const bad = sfn(AUTH, { credentials: { ...KEY, accessKeyId: env.TW_UNKNOWN_KEY_ID } });
  await expectError(bad.send(new ListActivitiesCommand({})),
                    "UnrecognizedClientException", MSG.unknownKey);
  await expectError(bad.send(new GetActivityTaskCommand({ activityArn: ARN_PREFIX + "x" })),
                    "UnrecognizedClientException", MSG.unknownKey);
});

await run("unsigned request: MissingAuthenticationTokenException", async () => {
  const anon = sfn(AUTH, { signer: { sign: async (request) => request } });
  await expectError(anon.send(new ListActivitiesCommand({})),
                    "MissingAuthenticationTokenException", MSG.missingAuth);
});

// AWS answers with a Date header, from which the SDK corrects a skewed client clock and retries
// (AwsSdkSigV4Signer.errorHandler): a worker whose clock is 20 minutes slow still gets through.
await run("a client clock 20 min slow: corrected from the Date header", async () => {
  const skewed = sfn(AUTH, { systemClockOffset: -20 * 60 * 1000 });
  const r = await skewed.send(new ListActivitiesCommand({}));
  assert.ok(r.$metadata.attempts >= 2, "corrected on a retry");
  assert.ok(Array.isArray(r.activities));
});

const failed = results.filter((ok) => !ok).length;
console.log(`[js] ${results.length - failed}/${results.length} cases passed`);
process.exit(failed === 0 ? 0 : 1);
