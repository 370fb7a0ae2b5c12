// A tokenwheel worker written with the AWS SDK for JavaScript v3, unchanged but for `endpoint`:
// it takes tasks from an activity, heartbeats, and reports success or failure.
//
//   make run                        # in another terminal: tokenwheeld on 127.0.0.1:8083
//   node examples/node/worker.mjs   # then issue tasks: /usr/bin/python3 examples/issuer.py
//
// (`make deps` installs @aws-sdk/client-sfn here from package-lock.json; or `npm ci` in this
// directory.)
// Task input {"numbers": [1, 2, 3]} -> output {"sum": 6}; anything else -> a failure.
// Environment: TW_ENDPOINT (http://127.0.0.1:8083), TW_ACTIVITY (tokenwheel-example),
// TW_MAX_TASKS (0: run until Ctrl-C), AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (needed only
// when the server has --aws-credentials; dummy keys otherwise).
import os from "node:os";

import {
  SFNClient,
  CreateActivityCommand,
  GetActivityTaskCommand,
  SendTaskHeartbeatCommand,
  SendTaskSuccessCommand,
  SendTaskFailureCommand,
} from "@aws-sdk/client-sfn";

const endpoint = process.env.TW_ENDPOINT ?? "http://127.0.0.1:8083";
const maxTasks = Number(process.env.TW_MAX_TASKS ?? "0");
const workerName = `node-${os.hostname()}-${process.pid}`;
const sfn = new SFNClient({
  endpoint,
  region: process.env.AWS_REGION ?? "us-east-1",
  credentials: {
    accessKeyId: process.env.AWS_ACCESS_KEY_ID ?? "AKIDEXAMPLEWORKER",
    secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY ?? "example-secret-not-checked",
  },
});

const { activityArn } = await sfn.send(new CreateActivityCommand({
  name: process.env.TW_ACTIVITY ?? "tokenwheel-example" }));  // idempotent
console.log(`worker ${workerName} polling ${activityArn} at ${endpoint}`);

for (let done = 0; maxTasks === 0 || done < maxTasks;) {
  const task = await sfn.send(new GetActivityTaskCommand({ activityArn, workerName }));
  if (!task.taskToken) continue;  // the poll ended empty: poll again
  const { taskToken, input } = task;
  await sfn.send(new SendTaskHeartbeatCommand({ taskToken }));
  const numbers = JSON.parse(input)?.numbers;
  if (Array.isArray(numbers)) {
    const output = JSON.stringify({ sum: numbers.reduce((a, b) => a + b, 0) });
    await sfn.send(new SendTaskSuccessCommand({ taskToken, output }));
    console.log(`task done: ${input} -> ${output}`);
  } else {
    await sfn.send(new SendTaskFailureCommand({
      taskToken, error: "Example.BadInput", cause: `input has no list of numbers: ${input}` }));
    console.log(`task failed: ${input}`);
  }
  done++;
}
