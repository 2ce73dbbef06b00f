#!/usr/bin/env bash
# Start a call and check its pin with redis-cli alone: the raw Celery message, by hand.
#
#   CALLPASS_REDIS_URL=redis://127.0.0.1:6379/0 examples/redis-cli/start_call.sh 79990001001 [timeout]
#
# Prints "PLACED <callid> <pin>" as soon as the call rings, then the request's final result
# record (its "result" is the outcome document), then the record of the worker's check of that
# pin (its "result": {"valid", "reason", "attempts_left"}).
set -o errexit -o nounset -o pipefail

url=${CALLPASS_REDIS_URL:-redis://127.0.0.1:6379/0} # the workers' broker and result backend
queue=${CALLPASS_QUEUE:-callpass}
dn=${1:?usage: start_call.sh DN [TIMEOUT]}
timeout=${2:-5}
[[ $dn =~ ^[0-9]+$ && $timeout =~ ^[0-9]+$ ]] || { echo "DN and TIMEOUT are digits" >&2; exit 2; }

# A password goes to redis-cli in REDISCLI_AUTH, not in its arguments (which `ps` shows).
if [[ $url =~ ^(rediss?://)([^@/]*)@(.*)$ ]]; then
  export REDISCLI_AUTH=${BASH_REMATCH[2]#*:}
  url=${BASH_REMATCH[1]}${BASH_REMATCH[3]}
fi
r() { redis-cli -u "$url" "$@"; }
uuid() { cat /proc/sys/kernel/random/uuid; }

# publish ID TASK QUEUE BODY ARGSREPR KWARGSREPR: LPUSH one Celery protocol-2 message onto QUEUE.
publish() {
  local message
  printf -v message '{"body": "%s", "content-encoding": "utf-8", "content-type": "application/json",
    "headers": {"lang": "sh", "task": "%s", "id": "%s", "root_id": "%s",
                "argsrepr": "%s", "kwargsrepr": "%s", "callpass_requested_at": %(%s)T},
    "properties": {"correlation_id": "%s", "reply_to": "", "delivery_mode": 2, "priority": 0,
                   "delivery_info": {"exchange": "", "routing_key": "%s"},
                   "body_encoding": "base64", "delivery_tag": "%s"}}' \
    "$(printf '%s' "$4" | base64 -w0)" "$2" "$1" "$1" "$5" "$6" -1 "$1" "$3" "$(uuid)"
  r LPUSH "$3" "$message" >/dev/null
}

# await_record ID 'STATUS|…': the result record celery-task-meta-ID once its status matches.
await_record() {
  local record deadline=$((SECONDS + timeout + 60)) re="\"status\": \"($2)\""
  until record=$(r GET "celery-task-meta-$1") && [[ $record =~ $re ]]; do
    ((SECONDS < deadline)) || { echo "task $1: no $2 in time" >&2; return 1; }
    sleep 0.1
  done
  printf '%s\n' "$record"
}

# field RECORD NAME: the first string value of NAME in the record.
field() { local re="\"$2\": \"([^\"]*)\""; [[ $1 =~ $re ]] && printf '%s' "${BASH_REMATCH[1]}"; }

task=$(uuid)
publish "$task" callpass.start_call "$queue" "[[], {\"dn\": \"$dn\", \"timeout\": $timeout}, {}]" \
  "()" "{'dn': '<masked>'}"
first=$(await_record "$task" 'PLACED|SUCCESS|FAILURE')
if [[ $first == *'"status": "PLACED"'* ]]; then
  pin=$(field "$first" pin)
  echo "PLACED $(field "$first" callid) $pin"
fi
await_record "$task" 'SUCCESS|FAILURE'
if [[ -n ${pin:-} ]]; then
  # A request that named no verification is one, under its request_id (here: the task id).
  check=$(uuid)
  publish "$check" callpass.verify_code "$queue.codes" \
    "[[\"$(field "$first" request_id)\", \"$pin\"], {}, {}]" "(request_id, <code>)" "{}"
  await_record "$check" 'SUCCESS|FAILURE'
fi
