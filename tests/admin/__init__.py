"""Tests of the tenancy admin API, tenant self-service and the admin CLI commands."""
