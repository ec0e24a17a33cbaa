DROP TABLE ledger_entries;
DROP TABLE authorizations;
DROP TABLE accounts;
