"""The README's Python quickstart blocks run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_the_three_quickstarts():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index):
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), {})


def test_the_api_the_readme_names_is_exported():
    import chaosgym
    from chaosgym.functional.rollout import rollout

    text = README.read_text()
    for name in ("make", "rollout", "register"):
        assert f"chaosgym.{name}(" in text
        assert callable(getattr(chaosgym, name))
    assert chaosgym.rollout is rollout
