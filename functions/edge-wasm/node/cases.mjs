// Runs the shared table of routing cases through the Lambda@Edge handler (the wasm
// build), on CloudFront event fixtures, with the table's objects as the sites bucket.
// The S3 origin is played by the table too: a forwarded request gets the blob its
// URI names, with S3's own headers, and then goes through origin-response.
//
//   node cases.mjs <router.wasm> <cases.json> <origin-request.json> <origin-response.json>
//
// Prints one line per case and `cases: N passed, N failed`; exits 1 on a failure.

import { readFileSync } from 'node:fs';

import { createRouter, HEADERS_CARRIER } from './router.mjs';

const [wasmPath, casesPath, requestFixture, responseFixture] = process.argv.slice(2);
const table = JSON.parse(readFileSync(casesPath, 'utf8'));
const requestEvent = readFileSync(requestFixture, 'utf8');
const responseEvent = readFileSync(responseFixture, 'utf8');

const objects = new Map();
for (const [label, record] of Object.entries(table.hosts)) objects.set(`edge/hosts/${label}.json`, JSON.stringify(record));
for (const [key, manifest] of Object.entries(table.manifests)) objects.set(key, JSON.stringify(manifest));
for (const [sha, content] of Object.entries(table.blobs)) objects.set(`blobs/${sha}`, content);
const reads = [];
async function load(key) {
  reads.push(key);
  const value = objects.get(key);
  return value === undefined ? null : new TextEncoder().encode(value);
}

const router = createRouter({ wasm: readFileSync(wasmPath), config: { domain: table.domain }, load });

function headerMap(headers) {
  const out = {};
  for (const [name, values] of Object.entries(headers ?? {})) out[name] = values[0].value;
  return out;
}

/** What a viewer would get for one case: {status, blob?, body?, headers}. */
async function run(request) {
  const event = JSON.parse(requestEvent);
  const cf = event.Records[0].cf.request;
  cf.method = request.method;
  const [path, query = ''] = request.uri.split(/\?(.*)/s);
  cf.uri = path;
  cf.querystring = query;
  cf.headers.host = [{ key: 'Host', value: request.host }];
  for (const [name, value] of Object.entries(request.headers)) cf.headers[name] = [{ key: name, value }];
  const result = await router.originRequest(event);
  if (result.status !== undefined) {
    // Generated here.
    const body = result.body === undefined ? undefined : Buffer.from(result.body, 'base64').toString('utf8');
    const blob = Object.keys(table.blobs).find((sha) => table.blobs[sha] === body);
    return { status: Number(result.status), blob: result.status === '404' ? blob : undefined, body, headers: headerMap(result.headers) };
  }
  // Forwarded to the S3 origin.
  if (!result.uri.startsWith('/blobs/')) throw new Error(`forwarded to ${result.uri}`);
  if (result.headers.host[0].value !== event.Records[0].cf.request.origin.s3.domainName) throw new Error('the Host header was not set to the S3 origin');
  const originEvent = JSON.parse(responseEvent);
  originEvent.Records[0].cf.request.uri = result.uri;
  originEvent.Records[0].cf.request.headers[HEADERS_CARRIER] = result.headers[HEADERS_CARRIER];
  const response = await router.originResponse(originEvent);
  const headers = headerMap(response.headers);
  if (Object.keys(headers).some((name) => name.startsWith('x-amz-'))) throw new Error('S3 headers leaked');
  return { status: Number(response.status), blob: result.uri.slice('/blobs/'.length), headers };
}

let passed = 0;
let failed = 0;
for (const { name, request, expect } of table.cases) {
  const wrong = [];
  let got;
  try {
    got = await run(request);
    if (got.status !== expect.status) wrong.push(`status ${got.status}`);
    if (expect.blob !== undefined && got.blob !== expect.blob) wrong.push(`blob ${got.blob}`);
    if (expect.body !== undefined && got.body !== expect.body) wrong.push(`body ${JSON.stringify(got.body)}`);
    if (expect.blob === undefined && expect.body === undefined && got.body) wrong.push('unexpected body');
    for (const [header, value] of Object.entries(expect.headers ?? {})) {
      if (got.headers[header] !== value) wrong.push(`header ${header}: ${got.headers[header]}`);
    }
  } catch (error) {
    wrong.push(String(error));
  }
  if (wrong.length) {
    failed += 1;
    console.log(`FAIL ${name}: ${wrong.join(', ')}`);
  } else {
    passed += 1;
    console.log(`ok   ${name}`);
  }
}

// A range request (206) and a revalidation (304) from the S3 origin keep the decided
// headers; an origin error becomes the platform's 502.
{
  const served = table.cases.find(({ expect }) => expect.status === 200 && expect.blob);
  const event = JSON.parse(requestEvent);
  event.Records[0].cf.request.headers.host = [{ key: 'Host', value: served.request.host }];
  event.Records[0].cf.request.uri = served.request.uri;
  const forwarded = await router.originRequest(event);
  for (const [status, want] of [['206', '206'], ['304', '304'], ['403', '502']]) {
    const originEvent = JSON.parse(responseEvent);
    originEvent.Records[0].cf.request.headers[HEADERS_CARRIER] = forwarded.headers[HEADERS_CARRIER];
    originEvent.Records[0].cf.response.status = status;
    const response = await router.originResponse(originEvent);
    const keeps = want === '502' || headerMap(response.headers)['x-deploysphere-deployment'] !== undefined;
    if (response.status === want && keeps) {
      passed += 1;
      console.log(`ok   the origin's ${status} becomes ${want}`);
    } else {
      failed += 1;
      console.log(`FAIL the origin's ${status} became ${response.status}`);
    }
  }
}

// Host records are cached for a short time, manifests for good (inside the wasm).
const manifestReads = reads.filter((key) => key.startsWith('manifests/')).length;
if (manifestReads > Object.keys(table.manifests).length + 1) {
  failed += 1;
  console.log(`FAIL manifests were read ${manifestReads} times: they should be kept`);
}
console.log(`cases: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
