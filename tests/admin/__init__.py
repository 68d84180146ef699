"""Tests of the tenancy admin API and the admin CLI commands."""
