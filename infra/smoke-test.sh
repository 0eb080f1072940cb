#!/usr/bin/env bash
# The post-deploy smoke test: does a deployed index-on-push stack index an image?
#
#   infra/smoke-test.sh --stack soci-indexer 123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app:1.4
#   infra/smoke-test.sh --stack soci-indexer team/app:1.4      # the registry: your account's ECR
#
# Given a deployed stack and an image already in one of the repositories it covers, it
#   1. finds the stack's function (or takes --function), your account and region, and the image's digest
#      (`soci-indexer status`, logged in with `aws ecr get-login-password`);
#   2. invokes the function with that image's ECR push event, as EventBridge would send it, but
#      synchronously (`aws lambda invoke`), and prints the function's answer;
#   3. waits for the index with `soci-indexer wait` and prints what to deploy.
# When a step fails it says which, and what to look at: your credentials, the stack's permissions
# (RepositoryNames), its filters (Filters), or the network (VPC endpoints, NAT).
#
# Options:
#   --stack NAME            the CloudFormation stack (its FunctionName output)
#   --function NAME         the function, instead of --stack
#   --region REGION         default: AWS_REGION, AWS_DEFAULT_REGION, then `aws configure get region`
#   --timeout DURATION      how long `soci-indexer wait` waits (default 10m; 90s, 10m or seconds)
#   --soci-indexer PATH     the CLI to use (default: soci-indexer on PATH)
#   --min-layer-size BYTES, --index-version v2|v1, --tag-suffix S
#                           what the stack indexes, for `soci-indexer wait` to judge the index as the
#                           function built it: with --stack, its MinLayerSize, IndexVersion and TagSuffix
#                           parameters; else the template's defaults (10485760, v2, -soci)
#   --plain-http            the registry speaks HTTP (local stand-ins only)
#
# It needs the AWS CLI with credentials allowed sts:GetCallerIdentity, lambda:InvokeFunction on the
# function, ecr:GetAuthorizationToken, ecr:BatchGetImage and ecr:GetDownloadUrlForLayer on the
# repository (and cloudformation:DescribeStacks with --stack). The registry password goes from
# `aws ecr get-login-password` to soci-indexer's stdin: it is never printed or put on a command line.
# Service endpoints can be redirected as the AWS CLI allows (AWS_ENDPOINT_URL_LAMBDA, ..._ECR), which is
# how the tests run it against local stand-ins (functions/index-on-push/tests/it/smoke.rs).
#
# Exit status: 0 indexed, 1 failed (the reason printed last), 2 usage.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { printf 'smoke-test: FAILED: %s\n' "$*" >&2; exit 1; }
usage_error() { printf 'smoke-test: %s (see --help)\n' "$*" >&2; exit 2; }
say() { printf '==> %s\n' "$*"; }

stack="" function="" region="" timeout=10m soci=soci-indexer plain_http=() image=""
min_layer_size="" index_version="" tag_suffix=""
while [ $# -gt 0 ]; do
    case "$1" in
        --stack) stack=${2:?--stack needs a value}; shift 2 ;;
        --function) function=${2:?--function needs a value}; shift 2 ;;
        --region) region=${2:?--region needs a value}; shift 2 ;;
        --timeout) timeout=${2:?--timeout needs a value}; shift 2 ;;
        --soci-indexer) soci=${2:?--soci-indexer needs a value}; shift 2 ;;
        --plain-http) plain_http=(--plain-http); shift ;;
        --min-layer-size) min_layer_size=${2:?--min-layer-size needs a value}; shift 2 ;;
        --index-version) index_version=${2:?--index-version needs a value}; shift 2 ;;
        --tag-suffix) tag_suffix=${2:?--tag-suffix needs a value}; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        -*) usage_error "unknown option $1" ;;
        *) [ -z "$image" ] || usage_error "one image only (got $image and $1)"; image=$1; shift ;;
    esac
done
[ -n "$image" ] || usage_error "which image? REPOSITORY:TAG or REGISTRY/REPOSITORY:TAG"
[ -n "$stack" ] || [ -n "$function" ] || usage_error "which stack? --stack NAME (or --function NAME)"
command -v aws >/dev/null || die "the AWS CLI is missing: install it (https://aws.amazon.com/cli/)"
command -v "$soci" >/dev/null || die "$soci is missing: install the soci-indexer CLI (see the README) or pass --soci-indexer PATH"

work=$(mktemp -d "${TMPDIR:-/tmp}/soci-smoke.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Runs aws "$@" quietly; on failure prints its error and returns its status.
aws_call() {
    if ! aws "$@" 2>"$work/aws.err"; then
        sed 's/^/    /' "$work/aws.err" >&2
        return 1
    fi
}
# What an AWS CLI error means, from its message in $work/aws.err.
aws_diagnosis() {
    if grep -qiE "AccessDenied|not authorized|UnrecognizedClient|InvalidClientTokenId|ExpiredToken" "$work/aws.err"; then
        echo "permissions: your AWS identity may not do this (or its credentials are expired): check the profile and its IAM policy"
    elif grep -qiE "Unable to locate credentials|NoCredentials" "$work/aws.err"; then
        echo "credentials: the AWS CLI found none: aws configure, AWS_PROFILE, or aws sso login"
    elif grep -qiE "Could not connect|connect timeout|Connection refused|Name or service not known|EndpointConnectionError|Read timeout" "$work/aws.err"; then
        echo "network: the AWS API endpoint cannot be reached from here (proxy, DNS, firewall, region)"
    elif grep -qiE "ResourceNotFound|does not exist|not found" "$work/aws.err"; then
        echo "not found: check the name and the region ($region)"
    else
        echo "the AWS CLI failed (its error is above)"
    fi
}

# --- Where -----------------------------------------------------------------------------------------

region=${region:-${AWS_REGION:-${AWS_DEFAULT_REGION:-$(aws configure get region 2>/dev/null || true)}}}
[ -n "$region" ] || die "no region: pass --region, or set AWS_REGION"
export AWS_REGION=$region AWS_DEFAULT_REGION=$region
export AWS_PAGER=""

say "who am I (sts get-caller-identity)"
account=$(aws_call sts get-caller-identity --query Account --output text) \
    || die "$(aws_diagnosis)"
echo "    account $account, region $region"

if [ -z "$function" ]; then
    say "the function of stack $stack"
    function=$(aws_call cloudformation describe-stacks --stack-name "$stack" \
        --query "Stacks[0].Outputs[?OutputKey=='FunctionName'].OutputValue" --output text) \
        || die "stack $stack: $(aws_diagnosis)"
    [ -n "$function" ] && [ "$function" != None ] \
        || die "stack $stack has no FunctionName output: is it a soci-indexer stack (template.yaml)?"
    # What the stack indexes, unless given: the CLI judges the index with the same settings.
    parameters=$(aws_call cloudformation describe-stacks --stack-name "$stack" --output text \
        --query "Stacks[0].Parameters[?ParameterKey=='MinLayerSize' || ParameterKey=='IndexVersion' || ParameterKey=='TagSuffix'].[ParameterKey,ParameterValue]") \
        || die "stack $stack: $(aws_diagnosis)"
    while read -r key value; do
        case "$key" in
            MinLayerSize) min_layer_size=${min_layer_size:-$value} ;;
            IndexVersion) index_version=${index_version:-$value} ;;
            TagSuffix) tag_suffix=${tag_suffix:-$value} ;;
        esac
    done <<<"$parameters"
fi
min_layer_size=${min_layer_size:-10485760} index_version=${index_version:-v2} tag_suffix=${tag_suffix:--soci}
echo "    function $function (indexes layers of $min_layer_size bytes or more, SOCI $index_version, tag suffix $tag_suffix)"
settings=(--min-layer-size "$min_layer_size" --index-version "$index_version" "--tag-suffix=$tag_suffix")

# REPOSITORY:TAG in the account's ECR, or REGISTRY/REPOSITORY:TAG (a registry has a dot or a port).
first=${image%%/*}
if [ "$first" != "$image" ] && { [[ $first == *.* ]] || [[ $first == *:* ]] || [ "$first" = localhost ]; }; then
    registry=$first rest=${image#*/}
else
    registry=$account.dkr.ecr.$region.amazonaws.com rest=$image
fi
case "$rest" in
    *@*) die "$image names a digest: give the tag the image was pushed as (REPOSITORY:TAG)" ;;
    *:*) repository=${rest%:*} tag=${rest##*:} ;;
    *) die "$image has no tag: REPOSITORY:TAG" ;;
esac
reference=$registry/$repository:$tag

# --- The image -------------------------------------------------------------------------------------

say "logging in to $registry (aws ecr get-login-password)"
password=$(aws_call ecr get-login-password) || die "ecr get-login-password: $(aws_diagnosis)"
[ -n "$password" ] || die "aws ecr get-login-password printed nothing"
# soci-indexer with the registry login on stdin, never on a command line.
soci_logged_in() { printf '%s' "$password" | "$soci" "$@" "${plain_http[@]}" --username AWS --password-stdin; }

say "the image: $reference"
status=0
soci_logged_in status "$reference" "${settings[@]}" --json >"$work/status.json" 2>"$work/status.err" || status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then
    sed 's/^/    /' "$work/status.err" >&2
    if grep -qiE "not found|unknown|MANIFEST_UNKNOWN|NAME_UNKNOWN" "$work/status.err"; then
        die "$reference is not in the registry: push it first (or fix the name)"
    elif grep -qiE "denied|unauthorized|401|403" "$work/status.err"; then
        die "permissions: your identity may not pull $repository (ecr:BatchGetImage, ecr:GetDownloadUrlForLayer)"
    else
        die "network: cannot read $reference from here (the error is above)"
    fi
fi
digest=$(grep -oE '"image_digest": *"sha256:[0-9a-f]{64}"' "$work/status.json" | grep -oE 'sha256:[0-9a-f]{64}') \
    || die "soci-indexer status printed no image digest for $reference"
already=no
[ "$status" -ne 0 ] || already=yes
echo "    $digest (already indexed: $already)"

# --- The push event --------------------------------------------------------------------------------

# What EventBridge delivers for an ECR push; names and digests need no JSON escaping (ECR's character
# sets), checked above and by the registry.
event_id=$(cat /proc/sys/kernel/random/uuid 2>/dev/null || echo "smoke-$(date +%s)-$$")
cat >"$work/event.json" <<EOF
{"version": "0", "id": "$event_id", "detail-type": "ECR Image Action", "source": "aws.ecr",
 "account": "$account", "time": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "region": "$region", "resources": [],
 "detail": {"result": "SUCCESS", "repository-name": "$repository", "image-digest": "$digest",
            "action-type": "PUSH", "image-tag": "$tag"}}
EOF

say "invoking $function with the push event of $repository:$tag (aws lambda invoke)"
# Synchronously (EventBridge invokes asynchronously, with retries): the answer comes back here. fileb://
# sends the file as it is with AWS CLI v1 and v2 alike. The
# function may take up to its timeout (900 s at most): the CLI must wait as long.
if ! aws_call lambda invoke --function-name "$function" \
    --payload "fileb://$work/event.json" --cli-read-timeout 960 \
    --query '[StatusCode, FunctionError]' --output text "$work/answer.json" >"$work/invoke.out"; then
    die "aws lambda invoke: $(aws_diagnosis) (lambda:InvokeFunction on $function)"
fi
read -r http_status function_error <"$work/invoke.out" || true
answer=$(tr -d '\n' <"$work/answer.json")
echo "    HTTP ${http_status:-?}: $answer"

# Why it failed, from the function's own words.
explain() {
    local text=$1
    if grep -qiE "matches no filter|excluded by filter" <<<"$text"; then
        echo "filters: the stack's Filters parameter does not select $repository:$tag: change Filters (and RepositoryNames) or push a tag it selects"
    elif grep -qiE "denied|not authorized|unauthorized|forbidden|401|403" <<<"$text"; then
        echo "permissions: the function's role may not pull from or push to $repository: the stack's RepositoryNames must cover it"
    elif grep -qiE "timed out|timeout|connect|dns|resolve|unreachable|network|tcp" <<<"$text"; then
        echo "network: the function cannot reach the registry (in a VPC: ECR api/dkr and S3 endpoints or a NAT gateway; see the README)"
    else
        echo "the function failed: its answer is above, and its log group has the details"
    fi
}
if [ -n "${function_error:-}" ] && [ "$function_error" != None ]; then
    die "the function raised $function_error: $(explain "$answer")"
fi
outcome=$(grep -oE '"outcome": *"[a-z_]+"' <<<"$answer" | grep -oE '[a-z_]+"$' | tr -d '"') \
    || die "the function's answer has no outcome: is $function soci-indexer's index-on-push?"
case "$outcome" in
    indexed) echo "    the function indexed $repository:$tag" ;;
    skipped)
        if [ "$already" = yes ] && grep -q "already indexed" <<<"$answer"; then
            echo "    already indexed before this test: the function found it so (delete $tag's SOCI tag to see it build)"
        else
            die "the function skipped the image: $(explain "$answer")"
        fi
        ;;
    failed) die "the function failed: $(explain "$answer")" ;;
    *) die "the function answered $outcome for a push event: its answer is above" ;;
esac

# --- The index -------------------------------------------------------------------------------------

say "waiting for the index (soci-indexer wait, up to $timeout)"
status=0
soci_logged_in wait "$reference" "${settings[@]}" --timeout "$timeout" >"$work/wait.out" 2>"$work/wait.err" || status=$?
sed 's/^/    /' "$work/wait.out"
case "$status" in
    0) ;;
    3) die "no index for $reference after $timeout, although the function answered $outcome: does the stack index with --min-layer-size $min_layer_size, --index-version $index_version and --tag-suffix $tag_suffix (its MinLayerSize, IndexVersion, TagSuffix)? Then look at the registry: soci-indexer status $reference" ;;
    *) sed 's/^/    /' "$work/wait.err" >&2; die "soci-indexer wait failed (the error is above)" ;;
esac
deploy=$(grep -E '^deploy ' "$work/wait.out" | tail -n 1) || die "soci-indexer wait printed nothing to deploy"
echo "smoke-test: OK: $reference is lazy-loadable; ${deploy}"
