#!/usr/bin/env bash
# `make deploy`: stands DeploySphere up on your AWS account from infra/ (the steps of
# infra/README.md "Deploy"). Needs the AWS CLI v2, SAM CLI and Docker with buildx, and:
#   REGION, DOMAIN, CERTIFICATE_ARN (us-east-1, *.DOMAIN), CLICKHOUSE_URL,
#   CLICKHOUSE_PASSWORD_SECRET_ARN; optional ARCH (arm64), KAFKA_MODE (Serverless).
set -euo pipefail
: "${REGION:?set REGION}" "${DOMAIN:?set DOMAIN}" "${CERTIFICATE_ARN:?set CERTIFICATE_ARN}"
: "${CLICKHOUSE_URL:?set CLICKHOUSE_URL}" "${CLICKHOUSE_PASSWORD_SECRET_ARN:?set CLICKHOUSE_PASSWORD_SECRET_ARN}"
ARCH=${ARCH:-arm64}
KAFKA_MODE=${KAFKA_MODE:-Serverless}
for tool in aws sam docker; do
  command -v "$tool" >/dev/null || { echo "deploy: $tool is required" >&2; exit 1; }
done
ACCOUNT=$(aws sts get-caller-identity --query Account --output text)
TAG=$(git rev-parse --short=12 HEAD)
BUCKET=deploysphere-sites-$ACCOUNT-$REGION
REGISTRY=$ACCOUNT.dkr.ecr.$REGION.amazonaws.com
output() { aws cloudformation describe-stacks --region "$1" --stack-name "$2" \
  --query "Stacks[0].Outputs[?OutputKey=='$3'].OutputValue" --output text; }

[ -f dist/lambda/rds-ca.pem ] || { echo "deploy: dist/lambda/rds-ca.pem is missing (see make lambda's warning)" >&2; exit 1; }
rm -rf dist/lambda/current && cp -r "dist/lambda/$ARCH" dist/lambda/current
make edge DOMAIN="$DOMAIN" BUCKET="$BUCKET" REGION="$REGION"

sam deploy --template-file infra/edge.yaml --stack-name deploysphere-edge --region us-east-1 \
  --resolve-s3 --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset \
  --parameter-overrides SitesBucketName="$BUCKET"
EDGE_REQUEST=$(output us-east-1 deploysphere-edge EdgeOriginRequestVersionArn)
EDGE_RESPONSE=$(output us-east-1 deploysphere-edge EdgeOriginResponseVersionArn)

first_time=false
aws cloudformation describe-stacks --region "$REGION" --stack-name deploysphere >/dev/null 2>&1 || first_time=true
main_stack() {
  sam deploy --template-file infra/template.yaml --stack-name deploysphere --region "$REGION" \
    --resolve-s3 --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset \
    --parameter-overrides Domain="$DOMAIN" CertificateArn="$CERTIFICATE_ARN" \
      EdgeOriginRequestVersionArn="$EDGE_REQUEST" EdgeOriginResponseVersionArn="$EDGE_RESPONSE" \
      BuildImageUri="$REGISTRY/deploysphere-build:$TAG" RelayImageUri="$REGISTRY/deploysphere-relay:$TAG" \
      ClickHouseUrl="$CLICKHOUSE_URL" ClickHousePasswordSecretArn="$CLICKHOUSE_PASSWORD_SECRET_ARN" \
      Architecture="$ARCH" KafkaMode="$KAFKA_MODE" "$@"
}
if $first_time; then main_stack RelayDesiredCount=0; else main_stack; fi

aws ecr get-login-password --region "$REGION" | docker login --username AWS --password-stdin "$REGISTRY"
docker buildx build --platform "linux/$ARCH" -f build-image/Dockerfile -t "$REGISTRY/deploysphere-build:$TAG" --push .
docker buildx build --platform "linux/$ARCH" -f build-image/relay.Dockerfile -t "$REGISTRY/deploysphere-relay:$TAG" --push .
if $first_time; then main_stack RelayDesiredCount=1; fi

echo "API:       $(output "$REGION" deploysphere ApiUrl)"
echo "WebSocket: $(output "$REGION" deploysphere WebSocketUrl)"
echo "DNS:       CNAME *.$DOMAIN -> $(output "$REGION" deploysphere DistributionDomainName)"
