// Stock import (same scenario as the Go harness's stock_import): an admin streams 50 NDJSON lines per
// request to POST /v1/stock:import, each adding one unit to a seeded SKU.
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e RATE=5 -e DURATION=1m loadtest/k6/stock_import.js
import http from 'k6/http';
import { check } from 'k6';
import { BASE_URL, auth, token } from './lib.js';

export const options = {
  scenarios: {
    stock_import: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 5),
      timeUnit: '1s',
      duration: __ENV.DURATION || '1m',
      preAllocatedVUs: 5,
      maxVUs: 50,
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.001'],
    'http_req_duration{name:importStock}': ['p(99)<500'],
  },
};

const LINES = 50;

export function setup() {
  let body = '';
  for (let i = 0; i < LINES; i++) {
    body += JSON.stringify({ sku: `SKU-${String(1 + (i % 24)).padStart(4, '0')}`, quantity: 1 }) + '\n';
  }
  return { tok: token('loadtest-admin', ['admin']), body };
}

export default function (data) {
  const res = http.post(`${BASE_URL}/v1/stock:import`, data.body,
    Object.assign(auth(data.tok, { 'Content-Type': 'application/x-ndjson' }), { tags: { name: 'importStock' } }));
  check(res, {
    'import 200': (r) => r.status === 200,
    'all lines applied': (r) => r.status === 200 && r.json('lines_applied') === LINES,
  });
}
