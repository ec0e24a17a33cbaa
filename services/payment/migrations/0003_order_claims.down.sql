DROP TABLE order_claims;
