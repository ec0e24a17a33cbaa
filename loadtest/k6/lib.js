// Shared helpers of the shopmesh k6 scripts. BASE_URL defaults to the gateway of `make run`.
import http from 'k6/http';
import { sleep } from 'k6';

export const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8080';

// TOKEN_RATE is how many dev tokens per second tokens() mints. POST /v1/dev/token is an anonymous
// request, limited per client IP by the gateway (GATEWAY_RATE_LIMIT_RPS 50/s, burst 100 in `make run`),
// and while that IP's bucket is empty the gateway answers 429 to the authenticated requests from the
// same address too. 40/s stays below the limit whatever the bucket held before.
const TOKEN_RATE = Number(__ENV.TOKEN_RATE || 40);

// token mints a dev bearer token (POST /v1/dev/token, dev profile only).
export function token(customerId, scopes) {
  const res = http.post(`${BASE_URL}/v1/dev/token`, JSON.stringify({ customer_id: customerId, scopes: scopes || [] }), {
    headers: { 'Content-Type': 'application/json' },
    tags: { name: 'token' },
  });
  if (res.status !== 200) {
    throw new Error(`dev token for ${customerId}: ${res.status} ${res.body}`);
  }
  return res.json('token');
}

// tokens mints one token per customer id, paced at TOKEN_RATE per second (for setup(): minting many at
// once is what the per-IP limit refuses after its burst).
export function tokens(customerIds, scopes) {
  const out = [];
  const start = Date.now();
  for (let i = 0; i < customerIds.length; i++) {
    const wait = start + (i * 1000) / TOKEN_RATE - Date.now();
    if (wait > 0) {
      sleep(wait / 1000);
    }
    out.push(token(customerIds[i], scopes));
  }
  return out;
}

// customer picks one of the seeded dev accounts cust-0001 … cust-1000.
export function customer() {
  return `cust-${String(1 + Math.floor(Math.random() * 1000)).padStart(4, '0')}`;
}

// sku picks one of the seeded products SKU-0001 … SKU-0024.
export function sku() {
  return `SKU-${String(1 + Math.floor(Math.random() * 24)).padStart(4, '0')}`;
}

export function auth(tok, extra) {
  return { headers: Object.assign({ Authorization: `Bearer ${tok}` }, extra || {}) };
}

// uuid4 is an idempotency key.
export function uuid4() {
  return 'xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx'.replace(/[xy]/g, (c) => {
    const r = (Math.random() * 16) | 0;
    return (c === 'x' ? r : (r & 0x3) | 0x8).toString(16);
  });
}
