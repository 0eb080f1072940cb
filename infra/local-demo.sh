#!/usr/bin/env bash
# The local run of index-on-push, end to end, with real stand-ins on loopback and no AWS account:
#
#   1. moto's server plays the ECR API (the function really calls GetAuthorizationToken on it),
#      EventBridge (a rule sends the function's completion events to an SQS queue, also in moto) and
#      DynamoDB (the zTOC cache table);
#   2. Debian's docker-registry (CNCF distribution) with htpasswd basic auth plays the ECR registry,
#      user AWS and the password that GetAuthorizationToken hands out;
#   3. a sample multi-layer, two-platform image is pushed to it (tests/examples/push_sample_image.rs),
#      and a second image that shares its base layer, to another repository;
#   4. `cargo lambda watch` runs the function, `cargo lambda invoke` sends it the EventBridge
#      "ECR Image Action" PUSH event of the first image (then the same event again: already indexed),
#      then the second image's: its base layer's zTOC comes from the cache, mounted, not built; after
#      each, the completion event the queue got is printed;
#   5. what the function pushed is read back from the registry: the <tag>-soci index, the SOCI index
#      of each platform and its per-layer zTOCs;
#   6. the first image is deleted and its ECR "DELETE" event sent: the function removes its <tag>-soci;
#   7. a reconcile request ({"reconcile": {}}) queues one message per repository on an SQS work queue
#      (in moto), each message is sent to the function as the event source mapping would: a third
#      image, pushed before the function was started and never announced, gets indexed (the backfill).
#
# Everything runs on 127.0.0.1 on free ports, keeps its files and logs in a temporary directory outside
# the project (cargo lambda watch reloads on changes in the project tree), and is stopped and removed
# on exit, also on failure or Ctrl-C. Settings (environment, all optional):
#
#   DEMO_REPOSITORY (demo/app)  DEMO_SECOND_REPOSITORY (demo/web)  DEMO_TAG (v1)  AWS_REGION (us-east-1)
#   DEMO_KEEP=1 (keep the temp dir)
#   SOCI_INDEX_VERSION (v2)  SOCI_MIN_LAYER_SIZE (1048576)  SOCI_SPAN_SIZE (1048576)  SOCI_FILTERS (*:*)
#   SOCI_TAG_SUFFIX (-soci)  LOG_LEVEL (info)  DEMO_SKIP_INSTALL=1 (don't run infra/install-tools.sh)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

repository=${DEMO_REPOSITORY:-demo/app}
second_repository=${DEMO_SECOND_REPOSITORY:-demo/web}
tag=${DEMO_TAG:-v1}
region=${AWS_REGION:-us-east-1}
account=123456789012 # moto's default account
tag_suffix=${SOCI_TAG_SUFFIX:--soci}

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'local-demo: %s\n' "$*" >&2; exit 1; }

if [ "${DEMO_SKIP_INSTALL:-}" != 1 ]; then
    infra/install-tools.sh
fi
PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
for tool in moto_server cargo-lambda /usr/bin/docker-registry; do
    command -v "$tool" >/dev/null || die "$tool is missing: run infra/install-tools.sh"
done

# The temporary directory: never inside the project tree.
work=$(mktemp -d "${TMPDIR:-/tmp}/soci-demo.XXXXXX")
case "$work/" in "$root"/*) die "temporary directory $work is inside the project: set TMPDIR elsewhere" ;; esac

pids=()
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    # Each service runs in its own process group (setsid): stop the group, so the function process that
    # cargo lambda watch started goes too.
    for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    # On failure (not on Ctrl-C) the end of every log, the function's first.
    if [ "$status" -ne 0 ] && [ "$status" -ne 130 ] && [ "$status" -ne 143 ]; then
        for log in "$work"/function.log "$work"/invoke.log "$work"/registry.log "$work"/moto.log; do
            [ -s "$log" ] || continue
            printf '\n--- last lines of %s ---\n' "$(basename "$log")" >&2
            tail -n "$([ "$log" = "$work/function.log" ] && echo 40 || echo 12)" "$log" >&2
        done
    fi
    if [ "${DEMO_KEEP:-}" = 1 ]; then
        echo "local-demo: kept $work" >&2
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts "$@" in the background in its own process group, output to $work/$name.log.
start() {
    local name=$1
    shift
    setsid "$@" >"$work/$name.log" 2>&1 </dev/null &
    pids+=("$!")
}

# Waits until URL answers HTTP with one of the expected statuses, while the last started process lives.
wait_http() {
    local name=$1 url=$2 expected=$3 seconds=$4 pid=${pids[-1]} status
    for _ in $(seq $((seconds * 10))); do
        kill -0 "$pid" 2>/dev/null || die "$name exited before answering on $url"
        status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)
        case " $expected " in *" $status "*) return 0 ;; esac
        sleep 0.1
    done
    die "$name did not answer on $url within ${seconds}s (last status: ${status:-none})"
}

# Waits until 127.0.0.1:PORT accepts connections, while the last started process lives.
wait_tcp() {
    local name=$1 port=$2 seconds=$3 pid=${pids[-1]}
    for _ in $(seq $((seconds * 10))); do
        kill -0 "$pid" 2>/dev/null || die "$name exited before listening on 127.0.0.1:$port"
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "$name did not listen on 127.0.0.1:$port within ${seconds}s"
}

export AWS_ACCESS_KEY_ID=demo-access-key AWS_SECRET_ACCESS_KEY=demo-secret-key
export AWS_REGION=$region AWS_DEFAULT_REGION=$region AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_SESSION_TOKEN
export CARGO_TERM_COLOR=never

say "building the sample image pusher and the function (cargo, dev profile)"
cargo build --quiet -p soci-indexer-e2e --example push_sample_image
cargo build --quiet -p index-on-push --bin index-on-push

say "starting moto (ECR API, EventBridge, SQS, DynamoDB) and docker-registry (the registry) on 127.0.0.1"
moto_port=$(free_port)
start moto moto_server -H 127.0.0.1 -p "$moto_port"
wait_http moto "http://127.0.0.1:$moto_port/moto-api/" "200" 30
ecr_endpoint="http://127.0.0.1:$moto_port"

# The ECR side of a push: the repositories exist, and the registry password comes from
# GetAuthorizationToken (what `aws ecr get-login-password` prints).
third_repository=${DEMO_THIRD_REPOSITORY:-demo/old}
password=$(python3 - "$ecr_endpoint" "$repository" "$second_repository" "$third_repository" <<'EOF'
import base64, sys
import boto3
ecr = boto3.client("ecr", endpoint_url=sys.argv[1])
for name in sys.argv[2:]:
    ecr.create_repository(repositoryName=name)
token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
user, password = base64.b64decode(token).decode().split(":", 1)
assert user == "AWS", user
print(password)
EOF
)
echo "moto      $ecr_endpoint  (ECR repositories $repository and $second_repository, account $account, $region)"

# What the template deploys besides the function: the zTOC cache table (partition key pk, time to live on
# expires_at); and what a deployment pipeline would add: a rule on the default bus that sends the
# function's completion events to a queue (here, for the demo to print them).
cache_table=soci-ztoc-cache
completion_queue=soci-completion-events
python3 - "$ecr_endpoint" "$cache_table" "$completion_queue" <<'EOF'
import json, sys
import boto3
endpoint, table, queue = sys.argv[1:]
dynamodb = boto3.client("dynamodb", endpoint_url=endpoint)
dynamodb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                      AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                      KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
dynamodb.update_time_to_live(TableName=table,
                             TimeToLiveSpecification={"AttributeName": "expires_at", "Enabled": True})
sqs = boto3.client("sqs", endpoint_url=endpoint)
url = sqs.create_queue(QueueName=queue)["QueueUrl"]
arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
events = boto3.client("events", endpoint_url=endpoint)
pattern = {"source": ["soci-indexer"], "detail-type": ["SOCI Index Action"]}
events.put_rule(Name=queue, EventPattern=json.dumps(pattern))
events.put_targets(Rule=queue, Targets=[{"Id": "queue", "Arn": arn}])
EOF
echo "moto      DynamoDB table $cache_table (the zTOC cache), EventBridge rule -> SQS queue $completion_queue"
# The template's reconcile work queue.
work_queue_url=$(python3 - "$ecr_endpoint" <<'EOF'
import sys
import boto3
print(boto3.client("sqs", endpoint_url=sys.argv[1]).create_queue(QueueName="soci-reconcile")["QueueUrl"])
EOF
)
echo "moto      SQS work queue $work_queue_url (the reconcile)"

registry_port=$(free_port)
mkdir -p "$work/registry"
python3 - "$work/htpasswd" "$password" <<'EOF'
import sys
import bcrypt
with open(sys.argv[1], "w") as f:
    f.write("AWS:" + bcrypt.hashpw(sys.argv[2].encode(), bcrypt.gensalt(rounds=10)).decode() + "\n")
EOF
cat >"$work/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: "$work/registry"
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$registry_port
  secret: local-demo-not-a-secret
auth:
  htpasswd:
    realm: local-demo
    path: "$work/htpasswd"
EOF
start registry /usr/bin/docker-registry serve "$work/registry.yml"
wait_http docker-registry "http://127.0.0.1:$registry_port/v2/" "401" 30
registry_url="http://127.0.0.1:$registry_port"
echo "registry  $registry_url  (basic auth: AWS / the ECR token's password)"

say "pushing the sample image $repository:$tag"
digest=$(cargo run --quiet -p soci-indexer-e2e --example push_sample_image -- \
    --registry "127.0.0.1:$registry_port" --repository "$repository" --tag "$tag" \
    --user AWS --password "$password")
[[ $digest == sha256:* ]] || die "the sample image push printed no digest"

say "pushing a second image, sharing the first one's base layer: $second_repository:$tag"
second_digest=$(cargo run --quiet -p soci-indexer-e2e --example push_sample_image -- \
    --registry "127.0.0.1:$registry_port" --repository "$second_repository" --tag "$tag" \
    --user AWS --password "$password" --variant 1)
[[ $second_digest == sha256:* ]] || die "the second image push printed no digest"

say "pushing a third image before the function runs, never announced: $third_repository:$tag"
third_digest=$(cargo run --quiet -p soci-indexer-e2e --example push_sample_image -- \
    --registry "127.0.0.1:$registry_port" --repository "$third_repository" --tag "$tag" \
    --user AWS --password "$password" --variant 1)
[[ $third_digest == sha256:* ]] || die "the third image push printed no digest"

say "starting the function: cargo lambda watch (log: $work/function.log)"
invoke_port=$(free_port)
cat >"$work/function.env" <<EOF
SOCI_REGISTRY_URL=$registry_url
AWS_ENDPOINT_URL_ECR=$ecr_endpoint
AWS_ENDPOINT_URL_EVENTBRIDGE=$ecr_endpoint
AWS_ENDPOINT_URL_DYNAMODB=$ecr_endpoint
SOCI_COMPLETION_EVENT_BUS=default
SOCI_ZTOC_CACHE_TABLE=$cache_table
SOCI_RECONCILE_QUEUE_URL=$work_queue_url
AWS_ENDPOINT_URL_SQS=$ecr_endpoint
AWS_REGION=$region
AWS_DEFAULT_REGION=$region
AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID
AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
AWS_EC2_METADATA_DISABLED=true
SOCI_FILTERS=${SOCI_FILTERS:-*:*}
SOCI_INDEX_VERSION=${SOCI_INDEX_VERSION:-v2}
SOCI_MIN_LAYER_SIZE=${SOCI_MIN_LAYER_SIZE:-1048576}
SOCI_SPAN_SIZE=${SOCI_SPAN_SIZE:-1048576}
SOCI_TAG_SUFFIX=$tag_suffix
LOG_LEVEL=${LOG_LEVEL:-info}
EOF
sed 's/^/  /' "$work/function.env"
# --ignore-changes: the demo runs what was built above, whatever is edited meanwhile.
start function cargo lambda watch --ignore-changes --color never --timeout 900 \
    --invoke-address 127.0.0.1 --invoke-port "$invoke_port" \
    --package index-on-push --bin index-on-push --env-file "$work/function.env"
# Only wait for the port: any HTTP request to the emulator is an invocation (a GET / is a function
# URL call). `cargo lambda invoke` then waits for the function to start.
wait_tcp "cargo lambda watch" "$invoke_port" 300

# The EventBridge event ECR sends for a push (the function's fixture, with the push filled in).
fixture=functions/index-on-push/fixtures/push-event.json
push_event() {
    python3 - "$fixture" "$1" "$account" "$region" "$2" "$3" "$tag" <<'EOF'
import datetime, json, os, sys, uuid
fixture, out, account, region, repository, digest, tag = sys.argv[1:]
if os.path.exists(fixture):
    event = json.load(open(fixture))
else:
    event = {"version": "0", "detail-type": "ECR Image Action", "source": "aws.ecr", "resources": [],
             "detail": {"result": "SUCCESS", "action-type": "PUSH"}}
event.update(id=str(uuid.uuid4()), account=account, region=region,
             time=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
event["detail"].update({"repository-name": repository, "image-digest": digest, "image-tag": tag,
                        "manifest-media-type": "application/vnd.oci.image.index.v1+json"})
json.dump(event, open(out, "w"), indent=2)
EOF
}
push_event "$work/event.json" "$repository" "$digest"
push_event "$work/second-event.json" "$second_repository" "$second_digest"

invoke() {
    local what=$1 event=${2:-event.json} expected_events=${3:-1} lines
    say "cargo lambda invoke index-on-push --data-file $event  ($what)"
    lines=$(wc -l <"$work/function.log")
    if ! cargo lambda invoke index-on-push --invoke-address 127.0.0.1 --invoke-port "$invoke_port" \
        --data-file "$work/$event" --output-format json >"$work/invoke.out" 2>"$work/invoke.log"; then
        cat "$work/invoke.out" "$work/invoke.log" >&2
        die "the invocation failed"
    fi
    echo "response: $(cat "$work/invoke.out")"
    # The function's JSON log line and EMF metrics of this invocation.
    sleep 0.5
    tail -n +"$((lines + 1))" "$work/function.log" | python3 -c '
import json, sys
for line in sys.stdin:
    line = line.strip()
    start = line.find("{")
    if start < 0:
        continue
    try:
        record = json.loads(line[start:])
    except ValueError:
        continue
    if "_aws" in record:
        metrics = [m["Name"] for m in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
        print("EMF  " + "  ".join(f"{name}={record.get(name)}" for name in metrics))
    elif record.get("outcome"):
        keep = ("level", "message", "repository", "digest", "tag", "outcome", "reason", "index_digest",
                "pushed_tag", "layers_indexed", "layers_reused", "layers_skipped", "bytes", "pruned",
                "repositories_listed", "tags_indexed", "requeued", "duration_ms", "retry",
                "completion_event_failed")
        print("log  " + json.dumps({k: record[k] for k in keep if k in record}))
'
    # The completion event the rule delivered to the queue meanwhile.
    python3 - "$ecr_endpoint" "$completion_queue" "$expected_events" <<'EOF'
import json, sys
import boto3
sqs = boto3.client("sqs", endpoint_url=sys.argv[1])
url = sqs.get_queue_url(QueueName=sys.argv[2])["QueueUrl"]
received = 0
while True:
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    if not messages:
        break
    for message in messages:
        event = json.loads(message["Body"])
        print(f"completion event  {event['source']} / {event['detail-type']}: " + json.dumps(event["detail"]))
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        received += 1
if received != int(sys.argv[3]):
    sys.exit(f"local-demo: expected {sys.argv[3]} completion event(s) in the queue, got {received}")
EOF
}

say "the event"
cat "$work/event.json"
invoke "first push: indexes"
invoke "the same event again: already indexed"
invoke "the second image: its base layer's zTOC comes from the cache" second-event.json
python3 - "$work/invoke.out" "$ecr_endpoint" "$cache_table" "$repository" <<'EOF'
import json, sys
import boto3
answer, endpoint, table, first = sys.argv[1:]
report = json.load(open(answer))
items = boto3.client("dynamodb", endpoint_url=endpoint).scan(TableName=table)["Items"]
print(f"\nzTOC cache: {len(items)} item(s) in DynamoDB table {table}")
print(f"second image ({report['repository']}): {report['layers_reused']} layer(s) reused from the zTOC cache "
      f"(their zTOCs were built for {first}: no download), {report['layers_indexed']} built")
if report["outcome"] != "indexed" or report["layers_reused"] < 1:
    sys.exit("local-demo: the second image reused no zTOC")
EOF

say "what the function pushed to $registry_url/$repository"
python3 infra/show-soci-index.py --registry "$registry_url" --repository "$repository" --tag "$tag" \
    --tag-suffix="$tag_suffix" --user AWS --password "$password"
say "what the function pushed to $registry_url/$second_repository"
python3 infra/show-soci-index.py --registry "$registry_url" --repository "$second_repository" --tag "$tag" \
    --tag-suffix="$tag_suffix" --user AWS --password "$password"

say "deleting $repository:$tag (its manifest, by digest) from the registry"
python3 - "$registry_url" "$repository" "$digest" "$password" <<'EOF'
import sys
import requests
url, repository, digest, password = sys.argv[1:]
answer = requests.delete(f"{url}/v2/{repository}/manifests/{digest}", auth=("AWS", password), timeout=30)
print(f"DELETE {repository}@{digest[:19]}...: HTTP {answer.status_code}")
answer.raise_for_status()
EOF
python3 - "$work/event.json" "$work/delete-event.json" <<'EOF'
import json, sys, uuid
event = json.load(open(sys.argv[1]))
event["id"] = str(uuid.uuid4())
event["detail"]["action-type"] = "DELETE"
event["detail"].pop("manifest-media-type", None)
json.dump(event, open(sys.argv[2], "w"), indent=2)
EOF
invoke "the image's DELETE event: its $tag$tag_suffix goes too" delete-event.json
soci_status=$(curl -s -o /dev/null -w '%{http_code}' -u "AWS:$password" \
    -H 'Accept: application/vnd.oci.image.index.v1+json' "$registry_url/v2/$repository/manifests/$tag$tag_suffix")
echo "$repository:$tag$tag_suffix now answers HTTP $soci_status"
[ "$soci_status" = 404 ] || die "the deleted image's SOCI index is still there"

say "the reconcile: backfills $third_repository:$tag, pushed before the function started"
echo '{"reconcile": {}}' >"$work/reconcile.json"
invoke "a reconcile request (as the schedule sends it, or aws lambda invoke by hand)" reconcile.json 0
python3 - "$ecr_endpoint" "$work_queue_url" "$work" <<'EOF'
import json, sys
import boto3
endpoint, url, work = sys.argv[1:]
sqs = boto3.client("sqs", endpoint_url=endpoint)
count = 0
while True:
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    if not messages:
        break
    for message in messages:
        count += 1
        event = {"Records": [{"messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"],
                              "body": message["Body"], "eventSource": "aws:sqs", "awsRegion": "us-east-1"}]}
        json.dump(event, open(f"{work}/work-{count}.json", "w"))
        print(f"work queue message {count}: {message['Body']}")
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
open(f"{work}/work-count", "w").write(str(count))
EOF
for i in $(seq 1 "$(cat "$work/work-count")"); do
    invoke "work queue message $i, as the event source mapping delivers it" "work-$i.json" 0
done
third_status=$(curl -s -o /dev/null -w '%{http_code}' -u "AWS:$password" \
    -H 'Accept: application/vnd.oci.image.index.v1+json' "$registry_url/v2/$third_repository/manifests/$tag$tag_suffix")
echo "$third_repository:$tag$tag_suffix now answers HTTP $third_status"
[ "$third_status" = 200 ] || die "the reconcile did not index $third_repository:$tag"

say "done: every process stopped and $work removed on exit"
