"""The package's shape: parts used through public methods, modules of readable size, docs that
match the code."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import latent_sculpting
from latent_sculpting import LatentSculpting

PACKAGE = Path(latent_sculpting.__file__).parent
ESTIMATOR = PACKAGE / "model" / "estimator.py"

#: Longest module, in lines: past it a module holds more than one concept.
MAX_LINES = 500


def estimator_private_names() -> set[str]:
    """Private methods and attributes the estimator defines (``_name``, not dunders)."""
    tree = ast.parse(ESTIMATOR.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "LatentSculpting")
    names = set()
    for node in ast.walk(cls):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "self":
                names.add(node.attr)
    # sklearn's own hook, which BaseEstimator calls
    return {n for n in names if n.startswith("_") and not n.endswith("__")} - {
        "_validate_params",
        "_parameter_constraints",
    }


def private_uses(path: Path, names: set[str]) -> list[str]:
    """``obj._name`` in ``path`` for each private estimator name, except on ``self``/``cls``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in names:
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if owner not in ("self", "cls"):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: .{node.attr}")
    return found


def test_no_module_but_the_estimator_uses_its_private_state():
    names = estimator_private_names()
    assert {"_map_blocks", "_benign_sample", "_timed"} <= names  # the walk is real
    used = [
        use
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != ESTIMATOR
        for use in private_uses(path, names)
    ]
    assert used == []


def test_the_private_use_check_finds_a_planted_call(tmp_path):
    planted = tmp_path / "adapt.py"
    planted.write_text("def adapt(model, X):\n    return model._benign_sample(X, None)\n")
    assert private_uses_outside(planted) == ["adapt.py:2: ._benign_sample"]


def private_uses_outside(path: Path) -> list[str]:
    """:func:`private_uses` for a file outside the package (named by its file name)."""
    names = estimator_private_names()
    return [
        f"{path.name}:{node.lineno}: .{node.attr}"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
        and node.attr in names
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
    ]


def test_no_module_is_over_the_line_budget():
    lengths = {
        str(p.relative_to(PACKAGE)): len(p.read_text().splitlines())
        for p in sorted(PACKAGE.rglob("*.py"))
    }
    assert len(lengths) > 100  # the walk is real
    assert {name: n for name, n in lengths.items() if n > MAX_LINES} == {}


DEFAULT = re.compile(r"^    (?P<names>[\w, ]+) : .*?default=(?P<defaults>.+)$")


def documented_defaults() -> dict[str, str]:
    """Each parameter's default as the ``LatentSculpting`` docstring states it."""
    doc = inspect.getdoc(LatentSculpting)
    section = doc.split("Parameters\n----------\n", 1)[1].split("Attributes\n----------", 1)[0]
    out = {}
    for line in ("    " + text for text in section.splitlines()):
        match = DEFAULT.match(line)
        if not match:
            continue
        names = [n.strip() for n in match["names"].split(",")]
        defaults = (
            [d.strip() for d in match["defaults"].split(",")]
            if len(names) > 1
            else [match["defaults"].strip()]
        )
        assert len(names) == len(defaults), line
        out.update(zip(names, defaults, strict=True))
    return out


def test_the_docstring_states_the_signature_defaults():
    documented = documented_defaults()
    signature = inspect.signature(LatentSculpting.__init__).parameters
    assert len(documented) >= 40  # the parse is real
    wrong = {
        name: (text, signature[name].default)
        for name, text in documented.items()
        if ast.literal_eval(text) != signature[name].default
    }
    assert wrong == {}
    assert set(documented) == set(signature) - {"self"}
