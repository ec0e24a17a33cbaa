// Read-heavy mix (same scenario as the Go harness's read_mix): 60% one product, 25% the catalogue,
// 15% the caller's account, spread over 200 customers' tokens.
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e RATE=40 -e DURATION=1m loadtest/k6/read_mix.js
// The product routes are public: the gateway limits them per client IP, not per customer, and `make run`
// allows 50/s per client (GATEWAY_RATE_LIMIT_RPS) — so 85% of the mix must stay below 50/s from this
// machine, hence 40/s. For more, start the suite with a higher limit and raise RATE, e.g.
//   GATEWAY_RATE_LIMIT_RPS=1000 GATEWAY_RATE_LIMIT_BURST=2000 make run
//   k6 run -e RATE=200 loadtest/k6/read_mix.js
// setup() mints the 200 tokens at 40/s (lib.js tokens(): dev-token requests count per IP too), ~5 s.
import http from 'k6/http';
import { check } from 'k6';
import { BASE_URL, auth, sku, tokens } from './lib.js';

export const options = {
  scenarios: {
    read_mix: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 40),
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

const CUSTOMERS = 200;

export function setup() {
  const ids = [];
  for (let i = 1; i <= CUSTOMERS; i++) {
    ids.push(`cust-${String(i).padStart(4, '0')}`);
  }
  return { tokens: tokens(ids) };
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
