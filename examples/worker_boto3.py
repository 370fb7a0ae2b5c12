#!/usr/bin/python3
"""A tokenwheel worker written with boto3, unchanged but for endpoint_url: it takes tasks from
an activity, heartbeats, and reports success or failure.

  make run                                  # in another terminal: tokenwheeld on 127.0.0.1:8083
  /usr/bin/python3 examples/worker_boto3.py # then issue tasks: /usr/bin/python3 examples/issuer.py

Task input {"numbers": [1, 2, 3]} -> output {"sum": 6}; anything else -> a failure.
Environment: TW_ENDPOINT (http://127.0.0.1:8083), TW_ACTIVITY (tokenwheel-example),
TW_MAX_TASKS (0: run until Ctrl-C), AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (needed only when
the server has --aws-credentials; dummy keys otherwise). Debian: python3-boto3.
"""

import json
import os
import socket

import boto3
from botocore.config import Config


def main():
    endpoint = os.environ.get("TW_ENDPOINT", "http://127.0.0.1:8083")
    max_tasks = int(os.environ.get("TW_MAX_TASKS", "0"))
    worker = f"boto3-{socket.gethostname()}-{os.getpid()}"
    sfn = boto3.client(
        "stepfunctions", endpoint_url=endpoint,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "AKIDEXAMPLEWORKER"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY",
                                             "example-secret-not-checked"),
        # A long poll is answered within 60 s; botocore's default read timeout is exactly 60.
        config=Config(read_timeout=70))
    arn = sfn.create_activity(name=os.environ.get("TW_ACTIVITY", "tokenwheel-example"))[
        "activityArn"]  # idempotent
    print(f"worker {worker} polling {arn} at {endpoint}", flush=True)

    done = 0
    while max_tasks == 0 or done < max_tasks:
        task = sfn.get_activity_task(activityArn=arn, workerName=worker)
        if "taskToken" not in task:
            continue  # the poll ended empty: poll again
        token, data = task["taskToken"], json.loads(task["input"])
        sfn.send_task_heartbeat(taskToken=token)
        numbers = data.get("numbers") if isinstance(data, dict) else None
        if isinstance(numbers, list):
            output = json.dumps({"sum": sum(numbers)})
            sfn.send_task_success(taskToken=token, output=output)
            print(f"task done: {task['input']} -> {output}", flush=True)
        else:
            sfn.send_task_failure(taskToken=token, error="Example.BadInput",
                                  cause=f"input has no list of numbers: {task['input']}")
            print(f"task failed: {task['input']}", flush=True)
        done += 1


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
