// Order-placement journey (same scenario as the Go harness's order_placement): mint a token, list the
// products, place an order for one unit, follow the order's SSE stream until CONFIRMED or CANCELLED.
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e RATE=20 -e DURATION=1m loadtest/k6/order_placement.js
import http from 'k6/http';
import { check, fail } from 'k6';
import { Trend } from 'k6/metrics';
import { BASE_URL, auth, customer, sku, token, uuid4 } from './lib.js';

const journey = new Trend('journey_duration', true);

export const options = {
  scenarios: {
    order_placement: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 20),
      timeUnit: '1s',
      duration: __ENV.DURATION || '1m',
      preAllocatedVUs: 50,
      maxVUs: 500,
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.001'],
    'http_req_duration{name:createOrder}': ['p(99)<250'],
    journey_duration: ['p(99)<1000'],
    checks: ['rate>0.999'],
  },
};

export default function () {
  const t0 = Date.now();
  const tok = token(customer());
  const products = http.get(`${BASE_URL}/v1/products`, Object.assign(auth(tok), { tags: { name: 'listProducts' } }));
  check(products, { 'products 200': (r) => r.status === 200 });

  const res = http.post(`${BASE_URL}/v1/orders`, JSON.stringify({ items: [{ sku: sku(), quantity: 1 }] }),
    Object.assign(auth(tok, { 'Content-Type': 'application/json', 'Idempotency-Key': uuid4() }), { tags: { name: 'createOrder' } }));
  if (!check(res, { 'order 201': (r) => r.status === 201 })) {
    fail(`create order: ${res.status} ${res.body}`);
  }
  const id = res.json('id');

  // The stream ends by itself after CONFIRMED or CANCELLED, so k6's buffered GET returns the whole of it.
  const events = http.get(`${BASE_URL}/v1/orders/${id}/events`,
    Object.assign(auth(tok, { Accept: 'text/event-stream' }), { timeout: '20s', tags: { name: 'watchOrder' } }));
  const statuses = String(events.body || '')
    .split('\n')
    .filter((l) => l.startsWith('data:'))
    .map((l) => JSON.parse(l.slice(5)).status);
  check(events, { 'order confirmed': () => statuses[statuses.length - 1] === 'CONFIRMED' });
  journey.add(Date.now() - t0);
}
