"""The Python blocks of the README and of docs/quickstart.md run as written."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/quickstart.md")  # the pages whose ```python blocks are run
BLOCKS = {doc: re.findall(r"```python\n(.*?)```", (ROOT / doc).read_text(), re.S) for doc in DOCS}


def test_the_readme_and_the_quickstart_have_their_blocks():
    # the README: a Gymnasium environment and the training API; the quickstart: single, vector,
    # pure-JAX and SB3
    assert len(BLOCKS["README.md"]) >= 2
    assert len(BLOCKS["docs/quickstart.md"]) >= 4


@pytest.mark.parametrize(("doc", "index"), [(doc, i) for doc in DOCS for i in range(len(BLOCKS[doc]))])
def test_block_runs(doc, index):
    exec(compile(BLOCKS[doc][index], f"{doc} block {index}", "exec"), {})


def test_the_api_the_pages_name_is_exported():
    import chaosgym
    from chaosgym.functional.rollout import rollout

    text = "\n".join((ROOT / doc).read_text() for doc in DOCS)
    for name in ("make", "rollout", "register"):
        assert f"chaosgym.{name}(" in text
        assert callable(getattr(chaosgym, name))
    assert chaosgym.rollout is rollout
    assert "chaosgym.agents import train" in (ROOT / "README.md").read_text()
