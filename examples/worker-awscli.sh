#!/usr/bin/env bash
# A tokenwheel worker written with the AWS CLI, unchanged but for --endpoint-url: it takes tasks
# from an activity, heartbeats, and reports success or failure.
#
#   make run                          # in another terminal: tokenwheeld on 127.0.0.1:8083
#   examples/worker-awscli.sh         # then issue tasks: /usr/bin/python3 examples/issuer.py
#
# Task input {"numbers": [1, 2, 3]} -> output {"sum": 6}; anything else -> a failure.
# Environment: TW_ENDPOINT (http://127.0.0.1:8083), TW_ACTIVITY (tokenwheel-example),
# TW_MAX_TASKS (0: run until Ctrl-C), AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (needed only when
# the server has --aws-credentials; dummy keys otherwise). Needs the AWS CLI and jq.
set -euo pipefail

endpoint="${TW_ENDPOINT:-http://127.0.0.1:8083}"
activity="${TW_ACTIVITY:-tokenwheel-example}"
max_tasks="${TW_MAX_TASKS:-0}"
worker="awscli-$(hostname)-$$"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-AKIDEXAMPLEWORKER}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-example-secret-not-checked}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export AWS_PAGER=""
aws_cli="${AWS_CLI:-$(command -v /usr/bin/aws || command -v aws)}"

# --cli-read-timeout 70: a long poll is answered within 60 s; the CLI's default is exactly 60.
sfn() {
  "$aws_cli" --endpoint-url "$endpoint" --cli-read-timeout 70 --output json stepfunctions "$@"
}

arn=$(sfn create-activity --name "$activity" | jq -r .activityArn)  # idempotent
echo "worker $worker polling $arn at $endpoint"

done_tasks=0
while [ "$max_tasks" -eq 0 ] || [ "$done_tasks" -lt "$max_tasks" ]; do
  task=$(sfn get-activity-task --activity-arn "$arn" --worker-name "$worker")
  token=$(jq -r '.taskToken // empty' <<<"$task")
  [ -n "$token" ] || continue  # the poll ended empty: poll again
  input=$(jq -r .input <<<"$task")
  sfn send-task-heartbeat --task-token "$token" >/dev/null
  if sum=$(jq -ce 'if (.numbers | type) == "array" then {sum: (.numbers | add // 0)}
                   else error("no numbers") end' <<<"$input" 2>/dev/null); then
    sfn send-task-success --task-token "$token" --task-output "$sum" >/dev/null
    echo "task done: $input -> $sum"
  else
    sfn send-task-failure --task-token "$token" --error Example.BadInput \
      --cause "input has no list of numbers: $input" >/dev/null
    echo "task failed: $input"
  fi
  done_tasks=$((done_tasks + 1))
done
