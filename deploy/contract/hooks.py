"""schemathesis hooks for the gateway contract run (deploy/contract/run.sh loads them through
SCHEMATHESIS_HOOKS). They teach schemathesis the two things the OpenAPI document states in a form it
does not read:

- application/x-ndjson (POST /v1/stock:import): the document gives the body as the array of its lines'
  JSON values; the serializer writes one JSON value per line. A value that is not an array has no NDJSON
  form and is sent as no body (which the gateway refuses with 400, as the document says).
- x-unique-by (CreateOrderRequest.items: each SKU at most once): JSON Schema cannot say "unique by a
  property", so generated orders naming a SKU twice are dropped (filter_case) instead of sent as valid ones.
"""

import json

import schemathesis

NDJSON = "application/x-ndjson"


@schemathesis.serializer(NDJSON)
def ndjson(ctx, value):
    if not isinstance(value, list):
        return None
    return "".join(json.dumps(item) + "\n" for item in value).encode("utf-8")


@schemathesis.hook
def filter_case(context, case):
    if case.operation.definition.raw.get("operationId") != "createOrder":
        return True
    items = case.body.get("items") if isinstance(case.body, dict) else None
    if not isinstance(items, list):
        return True
    skus = [item["sku"] for item in items if isinstance(item, dict) and isinstance(item.get("sku"), str)]
    return len(skus) == len(set(skus))
