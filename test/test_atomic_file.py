"""atomic_path: the target is either untouched or fully replaced; no temporary file is left."""

import os

import pytest

from torchao._models.sam.utils.atomic_file import atomic_path


def test_success_replaces_the_file(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp != str(target)
        with open(tmp, "w") as f:
            f.write("new")
        assert target.read_text() == "old"  # not replaced before the block ends
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_error_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target, suffix=".npz") as tmp:
        assert tmp.endswith(".npz")
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("writer failed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_named_temporary_folder_replaces_a_leftover_and_is_removed_on_error(tmp_path):
    target, tmp = tmp_path / "out", str(tmp_path / ".out.partial")
    os.makedirs(os.path.join(tmp, "stale"))  # what an interrupted run left
    with pytest.raises(RuntimeError), atomic_path(target, tmp=tmp) as path:
        assert not os.path.exists(path)
        os.makedirs(path)
        raise RuntimeError("interrupted")
    assert not os.path.exists(tmp) and not target.exists()
    with atomic_path(target, tmp=tmp) as path:
        os.makedirs(path)
    assert target.is_dir() and not os.path.exists(tmp)
