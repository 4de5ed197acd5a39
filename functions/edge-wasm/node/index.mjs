// The Lambda@Edge entry points. Lambda@Edge has no environment variables: the
// domain, bucket and region come from `config.json`, written next to this file when
// the package is built (`make edge DOMAIN=... BUCKET=... REGION=...`). S3 is read with
// the AWS SDK v3 that the Node.js 22 runtime ships.

import { readFileSync } from 'node:fs';

import { createRouter } from './router.mjs';

const config = JSON.parse(readFileSync(new URL('./config.json', import.meta.url), 'utf8'));
const wasm = readFileSync(new URL('./router.wasm', import.meta.url));

let s3;
async function load(key) {
  if (!s3) {
    const { S3Client } = await import('@aws-sdk/client-s3');
    s3 = new S3Client({ region: config.region });
  }
  const { GetObjectCommand } = await import('@aws-sdk/client-s3');
  try {
    const object = await s3.send(new GetObjectCommand({ Bucket: config.bucket, Key: key }));
    return await object.Body.transformToByteArray();
  } catch (error) {
    if (error?.name === 'NoSuchKey' || error?.$metadata?.httpStatusCode === 404) return null;
    throw error;
  }
}

const router = createRouter({ wasm, config, load });

export const handler = (event) => router.originRequest(event);
export const originResponse = (event) => router.originResponse(event);
