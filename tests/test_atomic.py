"""The one rule every writer follows: complete or absent, never half-written."""

import os

import pytest

from latent_sculpting.atomic import atomic_path, write_json, write_text


def test_a_block_that_fails_leaves_the_target_and_no_temporary_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    for error in (ValueError, KeyboardInterrupt):
        with pytest.raises(error), atomic_path(target) as tmp:
            tmp.write_text("half")
            raise error
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]


def test_a_block_that_ends_replaces_the_target_with_ordinary_permissions(tmp_path):
    target = tmp_path / "sub" / "out.json"
    write_json({"a": 1}, target)
    assert target.read_text() == '{\n  "a": 1\n}\n'
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    write_text("new", target)
    assert target.read_text() == "new" and os.listdir(target.parent) == ["out.json"]
