import pytest

from pipeline.atomic import atomic_dir, clean_stray_temps, temp_path, write_text_atomic


def test_write_text_atomic_replaces_whole_file(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert not temp_path(target).exists()


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")

    def boom(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed")

    from pipeline.atomic import write_atomic

    with pytest.raises(RuntimeError):
        write_atomic(target, boom)
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_dir_swaps_folder_and_cleans_strays(tmp_path):
    target = tmp_path / "report"
    target.mkdir()
    (target / "stale.md").write_text("x")
    with atomic_dir(target) as tmp:
        (tmp / "index.md").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["index.md"]
    stray = temp_path(tmp_path / "other")
    stray.write_text("left by a killed writer")
    assert clean_stray_temps(tmp_path) == [stray]
    assert not stray.exists()
