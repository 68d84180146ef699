"""The Files API in the config file: the platform's defaults and storage folder under
`server.files`, a tenant's own limits under its `files`, applied to the store at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.app import files_dir
from deployments.config import ConfigError, parse_config
from deployments.tenancy_setup import apply_config
from serving.batch.files import store as file_store
from serving.batch.files.rules import FileLimitOverrides, FileLimits
from tests.unit.stores import sqlite_store

ENDPOINT = {"name": "demo", "owner": "acme", "model": "builtin:demo"}


def config(server: dict | None = None, acme: dict | None = None):
    return parse_config({"server": server or {}, "tenants": [{"name": "acme", **(acme or {})}],
                         "endpoints": [ENDPOINT]})


def test_the_defaults_are_the_platforms_and_the_folder_is_the_data_homes(tmp_path, monkeypatch):
    monkeypatch.setenv("AIFACTORY_HOME", str(tmp_path))
    files = config().server.files
    assert FileLimits(**files.model_dump(exclude={"storage_dir"})) == FileLimits()
    assert files_dir(config()) == tmp_path / "files"
    shared = config({"files": {"storage_dir": "/mnt/shared/aifactory-files",
                               "max_file_bytes": 200_000_000}})
    assert files_dir(shared) == Path("/mnt/shared/aifactory-files")
    assert shared.server.files.max_file_bytes == 200_000_000


@pytest.mark.parametrize(("server", "acme", "field"), [
    ({"files": {"max_files": 0}}, None, "server.files.max_files"),
    ({"files": {"max_file_bytes": "lots"}}, None, "server.files.max_file_bytes"),
    ({"files": {"max_bytes": 1}}, None, "server.files.max_bytes"),
    (None, {"files": {"max_total_bytes": -1}}, "tenants.0.files.max_total_bytes"),
])
def test_a_bad_limit_is_refused_naming_its_field(server, acme, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        config(server, acme)


def test_a_tenants_own_limits_reach_the_store_and_stay_when_left_out(tmp_path):
    store = sqlite_store(tmp_path, "acme", "demo")
    apply_config(store, config(acme={"files": {"max_files": 3}}))
    assert file_store.get_limits(store, "acme") == FileLimitOverrides(max_files=3)
    apply_config(store, config())  # left out: the store keeps what it has
    assert file_store.get_limits(store, "acme") == FileLimitOverrides(max_files=3)
    store.close()
