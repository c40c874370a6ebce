"""Atomic writes: all or nothing, and the permissions a plain write would give."""
from __future__ import annotations

import os
import stat

import pytest

from probelab.paths import atomic_dir, atomic_write_bytes, atomic_write_text


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_get_the_umask_permissions_not_the_temp_files(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_bytes(tmp_path / "b.bin", b"\0\1")
        with atomic_dir(tmp_path / "out") as d:
            (d / "inner.json").write_text("{}")
        (tmp_path / "plain").mkdir()
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.txt") == _mode(tmp_path / "b.bin") == _mode(tmp_path / "plain.txt") == 0o666 & ~umask
    assert _mode(tmp_path / "out") == _mode(tmp_path / "plain") == 0o777 & ~umask
    assert (tmp_path / "b.bin").read_bytes() == b"\0\1"


def test_a_failed_write_leaves_the_old_output_and_no_temp_files(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "old")
    with atomic_dir(tmp_path / "out") as d:
        (d / "f").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "out") as d:
            (d / "f").write_text("new")
            raise RuntimeError("half-way")
    with pytest.raises(TypeError):
        atomic_write_bytes(tmp_path / "a.txt", "not bytes")
    assert (tmp_path / "a.txt").read_text() == "old" and (tmp_path / "out" / "f").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "out"]
