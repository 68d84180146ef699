"""The registration check of a LoRA adapter folder (serving/catalogue/registration.py): the
path as given, the folder on disk, then the rules against the endpoint's base model, every
problem named by file and reason in one refusal."""

from __future__ import annotations

import os

import pytest

from serving.catalogue import registration
from serving.catalogue.registration import Refused, check_folder, folder_path, path_problems
from serving.tenancy import Invalid
from tests.unit.catalogue_files import copy_of, demo_adapter, demo_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return demo_model(tmp_path_factory)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return demo_adapter(tmp_path_factory)


@pytest.mark.parametrize(("path", "reason"), [
    (None, "must be a non-empty string"),
    (42, "must be a non-empty string"),
    ("", "must be a non-empty string"),
    ("/data/a\0b", "NUL or another control character"),
    ("/data/a\nb", "NUL or another control character"),
    ("adapters/acme", "must be absolute"),
    ("./acme", "must be absolute"),
    ("/" + "a" * 4096, "is 4097 characters long; at most 4096"),
])
def test_paths_no_engine_can_open_are_refused(path, reason):
    with pytest.raises(Invalid, match=reason) as refused:
        folder_path(path)
    assert refused.value.field == "path"


def test_a_path_is_kept_normalised():
    assert folder_path("/data//acme/./x/../adapter/") == "/data/acme/adapter"


def test_a_missing_folder_or_a_file_is_refused(adapter, tmp_path):
    assert [str(p) for p in path_problems(str(tmp_path / "gone"), None)] == [
        f"(folder): {tmp_path / 'gone'} does not exist"]
    weights = adapter / "adapter_model.safetensors"
    assert [str(p) for p in path_problems(str(weights), None)] == [
        f"(folder): {weights} is not a directory"]


def test_a_folder_far_larger_than_an_adapter_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setattr(registration, "MAX_FILES", 3)
    for i in range(4):
        (tmp_path / f"f{i}").write_bytes(b"x")
    [problem] = path_problems(str(tmp_path), None)
    assert "holds more than 3 files" in str(problem)
    with pytest.raises(Refused, match="holds more than 3 files"):
        check_folder(str(tmp_path), "/nonexistent-base", 8)  # the base is never read


def test_within_a_root_nothing_may_resolve_outside_it(adapter, tmp_path):
    root = tmp_path / "acme"
    inside = copy_of(adapter, root)
    assert path_problems(str(inside), str(root)) == []
    # A symlink to a file outside the root: another tenant's weights, say.
    os.symlink(adapter / "README.md", inside / "notes.md")
    [problem] = path_problems(str(inside), str(root))
    assert str(problem) == f"(folder): notes.md resolves outside {root}, the folder adapters " \
                           "may be registered from"
    # The folder itself a symlink out of the root.
    os.symlink(adapter, root / "link")
    assert f"is outside {root}" in str(path_problems(str(root / "link"), str(root))[0])
    # A path outside gets the same answer whether it exists or not: a tenant learns nothing
    # of other folders.
    missing = path_problems(str(tmp_path / "other" / "nothing"), str(root))
    present = path_problems(str(adapter), str(root))
    assert [str(p).replace(str(tmp_path / "other" / "nothing"), "X") for p in missing] == \
        [str(p).replace(str(adapter), "X") for p in present]
    # Without a root (an operator's registration) symlinks are fine: HF cache snapshots.
    assert path_problems(str(root / "link"), None) == []


def test_a_good_adapter_gives_its_facts(adapter, model):
    facts = check_folder(str(adapter), str(model), 8)
    assert (facts.rank, facts.target_modules) == (8, ("q_proj", "v_proj"))
    assert facts.digest.startswith("sha256:")


def test_every_problem_is_named_at_once(adapter, model, tmp_path):
    broken = copy_of(adapter, tmp_path)
    (broken / "adapter_model.safetensors").unlink()
    with pytest.raises(Refused) as refused:
        check_folder(str(broken), str(model), None)
    assert [str(p) for p in refused.value.problems] == [
        "adapter_model.safetensors: is missing",
        "adapter_config.json: the endpoint does not enable LoRA (no max_lora_rank)"]
    assert str(refused.value) == (
        f"path: adapter folder {broken} refused: (1) adapter_model.safetensors: is missing "
        "(2) adapter_config.json: the endpoint does not enable LoRA (no max_lora_rank)")
    assert refused.value.field == "path"
