import pytest


@pytest.mark.parametrize("bad", ["../../X", "a/b", "..", ".hidden", "", "a..b", "x" * 200])
def test_check_name_refuses_names_that_escape(bad):
    from pipeline.errors import ConfigError
    from pipeline.workspace import check_name

    with pytest.raises(ConfigError, match="not allowed"):
        check_name(bad, "backbone")


def test_check_name_accepts_ordinary_names():
    from pipeline.workspace import check_name

    for good in ["demo-dino", "chexfound", "label_fraction=0.1", "vit_b16.v2"]:
        assert check_name(good, "backbone") == good
