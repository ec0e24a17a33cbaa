// Read-heavy mix (same scenario as the Go harness's read_mix): 60% one product, 25% the catalogue,
// 15% the caller's account, spread over 200 customers' tokens.
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e RATE=200 -e DURATION=1m loadtest/k6/read_mix.js
import http from 'k6/http';
import { check } from 'k6';
import { BASE_URL, auth, sku, token } from './lib.js';

export const options = {
  scenarios: {
    read_mix: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 200),
      timeUnit: '1s',
      duration: __ENV.DURATION || '1m',
      preAllocatedVUs: 50,
      maxVUs: 300,
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.001'],
    http_req_duration: ['p(99)<50'],
  },
};

export function setup() {
  const tokens = [];
  for (let i = 1; i <= 200; i++) {
    tokens.push(token(`cust-${String(i).padStart(4, '0')}`));
  }
  return { tokens };
}

export default function (data) {
  const tok = data.tokens[Math.floor(Math.random() * data.tokens.length)];
  const r = Math.random();
  let res;
  if (r < 0.6) {
    res = http.get(`${BASE_URL}/v1/products/${sku()}`, Object.assign(auth(tok), { tags: { name: 'getProduct' } }));
  } else if (r < 0.85) {
    res = http.get(`${BASE_URL}/v1/products`, Object.assign(auth(tok), { tags: { name: 'listProducts' } }));
  } else {
    res = http.get(`${BASE_URL}/v1/accounts/me`, Object.assign(auth(tok), { tags: { name: 'getMyAccount' } }));
  }
  check(res, { 'status 200': (x) => x.status === 200 });
}
