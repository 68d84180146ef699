"""Tests of serving/tenancy: admission, the store, the ledger, migrations, counters."""
