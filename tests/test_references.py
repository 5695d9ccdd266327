"""Every repository path and every `chaosgym.` module named in the code's docstrings and comments,
and in the docs' links and backticked text, exists (issue 31): a renamed or moved file leaves no
stale pointer behind.

What counts as a path: a relative path under a known top-level folder (chaosgym/, agents/, assets/,
benchmarks/, experiments/, scripts/, tests/, docs/) or a known top-level file (README.md,
pyproject.toml, requirements-lock.txt), ending in a file extension or a slash; a path that starts
with ../shared/ resolves against the repository's parent (skipped where that folder is absent). A
bare file name ending in .py or .md must be the name of some file of the repository. What counts
as a module: a dotted name under `chaosgym`, resolved on the file system (the installed
`chaosgym.agents` and `chaosgym.assets` are the top-level agents/ and assets/) to its longest module
prefix, whose next name, if any, must be one that module defines (see `defines`). Nothing is
imported."""

import ast
import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
CODE_FOLDERS = ("chaosgym", "agents", "benchmarks", "experiments", "scripts", "tests")
SKIP_PARTS = {".venv", "__pycache__"}
# markdown pages whose references are checked: every docs/ page except those other owners keep
# (README.md, docs/comparison.md and docs/gpu.md have their own tests and editors)
DOCS_SKIPPED = {"comparison.md", "gpu.md"}

TOP_FOLDERS = ("chaosgym", "agents", "assets", "benchmarks", "experiments", "scripts", "tests", "docs")
TOP_FILES = ("README.md", "pyproject.toml", "requirements-lock.txt")
PATH = re.compile(
    r"(?<![\w./~$-])"  # not the tail of an absolute, home, variable or longer relative path, nor of a URL
    r"(\.\./shared/(?:[\w.-]+/)*(?:[\w-]+(?:\.[A-Za-z0-9]+)+|[\w.-]+/?)"
    rf"|(?:{'|'.join(TOP_FOLDERS)})/(?:[\w.-]+/)*(?:[\w-]+(?:\.[A-Za-z0-9]+)+)?"
    rf"|(?:{'|'.join(re.escape(name) for name in TOP_FILES)}))"
    r"(?![\w/-])")
BARE = re.compile(r"(?<![\w./~$-])([\w-]+\.(?:py|md))(?![\w/-])")  # a file name alone: somewhere in the repository
MODULE = re.compile(r"(?<![\w./])chaosgym(?:\.[A-Za-z_]\w*)+")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")

# Deliberate examples and other projects' files, not references to this repository: (file, token) -> reason.
ALLOWED = {
    ("agents/ahac.py", "scripts/cfg/alg/ahac.yaml"): "a file of the AHAC authors' repository (imgeorgiev/DiffRL)",
    ("tests/stable_bptt_reference.py", "cartpole_simulator.py"): "the stable-BPTT paper's own simulator, not ours",
    ("tests/test_cartpole_paper.py", "cartpole_simulator.py"): "the stable-BPTT paper's own simulator, not ours",
    ("docs/custom_tasks.md", "my_pendulum.py"): "the user's own module of the page's example",
}


def repository_names() -> set[str]:
    """The name of every file of the repository (not of its virtual environment, caches or runs)."""
    skipped = SKIP_PARTS | {".git", "runs", ".wheels"}
    return {path.name for path in ROOT.rglob("*") if not skipped & set(path.relative_to(ROOT).parts)}


NAMES = repository_names()


def code_files() -> list[Path]:
    return sorted(path for folder in CODE_FOLDERS for path in (ROOT / folder).rglob("*.py")
                  if not SKIP_PARTS & set(path.relative_to(ROOT).parts))


def doc_files() -> list[Path]:
    return sorted(path for path in (ROOT / "docs").glob("*.md") if path.name not in DOCS_SKIPPED)


def prose(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every comment and docstring of a Python file."""
    source = path.read_text()
    found = [(token.start[0], token.string)
             for token in tokenize.generate_tokens(io.StringIO(source).readline) if token.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                # the docstring's lines, numbered from where its literal starts
                found += [(first.lineno + offset, line)
                          for offset, line in enumerate(first.value.value.splitlines())]
    return found


def path_exists(token: str, relative_to: Path = ROOT) -> bool | None:
    """Whether a path token names something that exists; None where it cannot be checked here."""
    if token.startswith("../shared/"):
        if not SHARED.is_dir():
            return None
        return (SHARED / token.removeprefix("../shared/")).exists()
    return (relative_to / token).exists()


def module_file(parts: list[str]) -> Path | None:
    """The source file of module `chaosgym.<parts>`, or None if there is none."""
    if parts[:1] in (["agents"], ["assets"]):
        base = ROOT / parts[0]
        parts = parts[1:]
    else:
        base = ROOT / "chaosgym"
    folder = base.joinpath(*parts)
    if (folder / "__init__.py").is_file():
        return folder / "__init__.py"
    if parts and folder.with_suffix(".py").is_file():
        return folder.with_suffix(".py")
    return None


def defines(source_file: Path, name: str) -> bool:
    """Whether a module binds `name` at its top level, or exports it lazily: names it as a string
    (a PEP 562 `__getattr__`'s list of names, or "module:Name" in a table of classes), or has a
    `__getattr__` that forwards every name, unchecked, to the modules it imports."""
    tree = ast.parse(source_file.read_text())
    strings = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    if name in strings or any(text.endswith(f":{name}") and MODULE.match(text) for text in strings):
        return True
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__" and not any(
                isinstance(op, ast.In) for test in ast.walk(node) if isinstance(test, ast.Compare) for op in test.ops):
            imported = [call.args[0].value for call in ast.walk(node) if isinstance(call, ast.Call)
                        and getattr(call.func, "attr", None) == "import_module"
                        and call.args and isinstance(call.args[0], ast.Constant)]
            if any(module_exists(f"{module}.{name}") for module in imported if module.startswith("chaosgym.")):
                return True
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((alias.asname or alias.name.split(".")[0]) == name for alias in node.names):
                return True
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(leaf, ast.Name) and leaf.id == name
                   for target in targets for leaf in ast.walk(target)):
                return True
    return False


def module_exists(token: str) -> bool:
    """Whether a dotted name under `chaosgym` is a module, or a module followed by a name it defines."""
    parts = token.split(".")[1:]
    for cut in range(len(parts), -1, -1):
        source_file = module_file(parts[:cut])
        if source_file is not None:
            rest = parts[cut:]
            return not rest or defines(source_file, rest[0])
    return False


def misses_in(relative: str, numbered: list[tuple[int, str]]) -> list[str]:
    """`file:line: token` of each path, file name or module in `numbered` that does not exist."""
    misses = []
    for line, text in numbered:
        tokens = [(token, path_exists(token)) for token in PATH.findall(text)]
        tokens += [(token, token in NAMES) for token in BARE.findall(text)]
        tokens += [(token, module_exists(token)) for token in MODULE.findall(text)]
        misses += [f"{relative}:{line}: {token}" for token, exists in tokens
                   if exists is False and (relative, token) not in ALLOWED]
    return misses


def markdown_references(path: Path) -> list[tuple[int, str, bool | None]]:
    """(line, target, exists) of each link, and each path or module in backticks, of a markdown page."""
    found = []
    fenced = False
    for line, text in enumerate(path.read_text().splitlines(), start=1):
        if text.lstrip().startswith("```"):
            fenced = not fenced
            continue
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL, a mail address or an anchor of this page
            found.append((line, target, path_exists(target.split("#")[0], path.parent)))
        spans = [text] if fenced else CODE_SPAN.findall(text)
        for span in spans:
            found += [(line, token, path_exists(token)) for token in PATH.findall(span)]
            found += [(line, token, module_exists(token)) for token in MODULE.findall(span)]
        found += [(line, token, token in NAMES) for token in BARE.findall(re.sub(r"\S+://\S+", "", text))]
    return found


def test_paths_and_modules_named_in_docstrings_and_comments_exist():
    misses = []
    for path in code_files():
        misses += misses_in(str(path.relative_to(ROOT)), prose(path))
    assert not misses, "stale references:\n" + "\n".join(misses)


def test_links_and_backticked_paths_in_the_docs_exist():
    misses = []
    for path in doc_files():
        relative = str(path.relative_to(ROOT))
        misses += [f"{relative}:{line}: {target}" for line, target, exists in markdown_references(path)
                   if exists is False and (relative, target) not in ALLOWED]
    assert not misses, "stale references:\n" + "\n".join(misses)


def test_the_allow_list_names_only_references_that_are_still_there():
    """An allow-list entry whose text was edited away is itself stale."""
    texts = {}
    for relative, token in ALLOWED:
        if relative not in texts:
            texts[relative] = (ROOT / relative).read_text()
        assert token in texts[relative], f"{relative} no longer names {token}: drop it from ALLOWED"


def test_the_layout_page_names_every_module_of_the_packages():
    """docs/layout.md is the map of the source tree: a module added to chaosgym/ or agents/ is on it."""
    layout = (ROOT / "docs" / "layout.md").read_text()
    missing = [str(path.relative_to(ROOT)) for folder in ("chaosgym", "agents") for path in (ROOT / folder).rglob("*.py")
               if path.name != "__init__.py" and not SKIP_PARTS & set(path.parts)
               and not re.search(rf"(?<![\w.]){re.escape(path.name)}(?!\w)", layout)]
    assert not missing, f"docs/layout.md does not name {missing}"


def test_the_patterns_find_what_they_should():
    text = ("see chaosgym/functional/rollout.py, docs/design.md and `tests/` (or ../shared/DESIGN.md); "
            "not /work/main/docs/x.md, runs/a/tests/b.py or https://example.org/docs/y.md")
    assert PATH.findall(text) == ["chaosgym/functional/rollout.py", "docs/design.md", "tests/", "../shared/DESIGN.md"]
    assert MODULE.findall("chaosgym.functional.rollout and chaosgym.agents.cluster.") == [
        "chaosgym.functional.rollout", "chaosgym.agents.cluster"]
    assert module_exists("chaosgym.functional.rollout") and module_exists("chaosgym.agents.cluster")
    assert module_exists("chaosgym.make") and module_exists("chaosgym.agents.train")
    assert not module_exists("chaosgym.env") and not module_exists("chaosgym.agents.train_loop")
    assert path_exists("chaosgym/faces/gym_env.py") and not path_exists("chaosgym/gym_adapters.py")
