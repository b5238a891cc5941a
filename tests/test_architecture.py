"""The rules of the code's shape, checked on the source with ``ast`` (nothing is imported).

* Imports run one way: ``flows -> pipeline -> unet``; ``unet`` takes only its error types
  from ``pipeline`` (``pipeline.errors``); ``pipeline`` never imports ``flows``.
* Inside ``pipeline``, the subpackages import each other only along ``ALLOWED`` (data-path
  order) and form no cycle.
* Sizes: no folder over 15 modules, no module over 400 lines, no function over 8 parameters.

Every import counts: those inside functions and ``if TYPE_CHECKING:`` blocks too, since a
deferred import still couples the two modules. What breaks a rule today is allow-listed
below by name (file, and function or imported module); an entry that no longer offends fails
the test, so the lists only shrink. Each checker is also run on a tiny package built in
``tmp_path`` to show it finds what it is for.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping, Set
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[1]
K = TypeVar("K", str, tuple[str, str])
PACKAGES = ("pipeline", "unet", "flows")

MAX_MODULES_PER_FOLDER = 15
MAX_MODULE_LINES = 400
MAX_PARAMETERS = 8

# Which part of ``pipeline`` may import which: a part is a subpackage or a top-level module.
# The order is the data path (input files -> sources -> ingest -> engine -> sinks, with run
# around it and cli on top); ``grids`` holds the geometry that readers and writers share, so
# it comes first (not second, as in the data path: the readers import it). ``storage`` (object
# storage: URLs, credentials, uploads) is where inputs come from and outputs go, below them
# all; ``mirror`` (a local working copy of a bucket prefix, for workdirs kept there) sits
# right on it. ``errors``, ``logsafe`` and ``progress`` (the hook stages report to) may be imported by
# every part. Derived from the code: an import that goes against the data path is listed in
# BACKWARD.
BASE = frozenset({"errors", "logsafe", "progress"})
ALLOWED: Mapping[str, frozenset[str]] = {
    "errors": frozenset(),
    "logsafe": frozenset({"errors"}),
    "progress": frozenset(),
    "storage": BASE,
    "mirror": BASE | {"storage"},
    "grids": BASE,
    "sources": BASE | {"storage", "grids"},
    "ingest": BASE | {"grids", "sources"},
    "engine": BASE | {"grids", "ingest"},
    "sinks": BASE | {"storage", "grids", "sources", "ingest", "engine"},
    "run": BASE | {"storage", "mirror", "grids", "sources", "ingest", "engine", "sinks"},
    "train": BASE | {"grids", "sources", "ingest", "engine", "sinks", "run"},
    "cli": BASE | {"storage", "grids", "sources", "ingest", "engine", "sinks", "run", "train"},
}

# Imports that go against the data path today, each closing a cycle between parts
# (importing file, imported module). To be moved, not extended.
BACKWARD: Set[tuple[str, str]] = frozenset()

# Imports against flows -> pipeline -> unet (importing file, imported module): none left.
AGAINST_ONE_WAY: Set[tuple[str, str]] = frozenset()

# Folders over MAX_MODULES_PER_FOLDER modules today (relative to the repository root).
TOO_MANY_MODULES: Set[str] = frozenset()

# Modules over MAX_MODULE_LINES lines: none left.
TOO_LONG: Set[str] = frozenset()

# Functions over MAX_PARAMETERS parameters (module, qualified name): the user's own forms only.
# A typer command takes one parameter per flag and a flow one per field of its form in the
# Prefect UI (engine and polygon options are already grouped in typed objects there).
TOO_MANY_PARAMETERS: Set[tuple[str, str]] = frozenset(
    {
        ("pipeline/cli/segment.py", "segment"),  # 24: typer options, one per flag
        ("pipeline/cli/train.py", "train"),  # 22: typer options, one per flag
        ("flows/flood_mapping.py", "flood_mapping"),  # 10: flow parameters
        ("flows/inbox.py", "flood_inbox"),  # 14: flow parameters
        ("flows/scan_archive.py", "scan_archive"),  # 9: flow parameters
    }
)


@dataclass(frozen=True)
class Import:
    """One import statement's target, resolved to an absolute module name."""

    importer: str  # dotted name of the importing module
    path: str  # the importing file, relative to the tree's root
    line: int
    target: str


def modules(root: Path, package: str) -> Iterator[tuple[str, Path]]:
    """(dotted name, file) of every module of ``package`` under ``root``."""
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def imports(root: Path, packages: tuple[str, ...]) -> list[Import]:
    """Every import in ``packages``, wherever it stands (functions, ``TYPE_CHECKING`` blocks).

    ``from a import b`` targets ``a.b`` when that is a module of the tree, else ``a``.
    """
    found = [(name, path) for package in packages for name, path in modules(root, package)]
    known = {name for name, _ in found}
    result: list[Import] = []
    for name, path in found:
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")
                    anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = []
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.append(full if full in known else base)
            else:
                continue
            result.extend(Import(name, rel, node.lineno, target) for target in targets)
    return result


def within(target: str, package: str) -> bool:
    """Whether module ``target`` is ``package`` or inside it."""
    return target == package or target.startswith(package + ".")


def one_way_offences(root: Path) -> dict[tuple[str, str], str]:
    """Imports against ``flows -> pipeline -> unet``, by (importing file, imported module)."""
    bad = {}
    for imp in imports(root, PACKAGES):
        top = imp.importer.split(".")[0]
        if top in ("pipeline", "unet") and within(imp.target, "flows"):
            bad[(imp.path, imp.target)] = f"{imp.path}:{imp.line}: {top} imports {imp.target}"
        if top == "unet" and within(imp.target, "pipeline") and not within(imp.target, "pipeline.errors"):
            bad[(imp.path, imp.target)] = (
                f"{imp.path}:{imp.line}: unet imports {imp.target} (only pipeline.errors is allowed)"
            )
    return bad


def part(module: str) -> str | None:
    """The part of ``pipeline`` a module belongs to (``pipeline.engine.infer`` -> ``engine``)."""
    names = module.split(".")
    return names[1] if names[0] == "pipeline" and len(names) > 1 else None


def part_edges(root: Path) -> dict[tuple[str, str], list[Import]]:
    """Imports between different parts of ``pipeline``, keyed by (importer part, imported part)."""
    edges: dict[tuple[str, str], list[Import]] = {}
    for imp in imports(root, ("pipeline",)):
        source, target = part(imp.importer), part(imp.target)
        if source and target and source != target:
            edges.setdefault((source, target), []).append(imp)
    return edges


def cycles(edges: Set[tuple[str, str]]) -> list[list[str]]:
    """The cycles of a directed graph, one per strongly connected part (each as a path)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    found: list[list[str]] = []
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in done:
                visit(nxt, [*path, nxt])
        done.add(node)

    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    return found


def direction_offences(root: Path, allowed: Mapping[str, frozenset[str]]) -> dict[tuple[str, str], str]:
    """Imports between parts of ``pipeline`` that ``allowed`` does not list, by (file, module)."""
    bad = {}
    for (source, target), imps in sorted(part_edges(root).items()):
        if target not in allowed.get(source, frozenset()):
            for imp in imps:
                bad[(imp.path, imp.target)] = f"{imp.path}:{imp.line}: {source} imports {imp.target}"
    return bad


def folder_sizes(root: Path) -> dict[str, int]:
    """Modules per folder (``__init__.py`` not counted)."""
    sizes: dict[str, int] = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            if path.name != "__init__.py":
                folder = path.parent.relative_to(root).as_posix()
                sizes[folder] = sizes.get(folder, 0) + 1
    return sizes


def module_lines(root: Path) -> dict[str, int]:
    """Lines per module."""
    return {
        path.relative_to(root).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for package in PACKAGES
        for path in (root / package).rglob("*.py")
    }


def parameter_counts(root: Path) -> dict[tuple[str, str], int]:
    """Parameters of every function and method, by (module, qualified name).

    Positional-only, positional and keyword-only parameters count; ``self``/``cls``,
    ``*args`` and ``**kwargs`` do not.
    """
    counts: dict[tuple[str, str], int] = {}

    def visit(node: ast.AST, prefix: str, rel: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                args = child.args
                names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
                counts[(rel, name)] = sum(1 for n in names if n not in ("self", "cls"))
                visit(child, f"{name}.", rel)
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.", rel)
            else:
                visit(child, prefix, rel)

    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            visit(ast.parse(path.read_text(encoding="utf-8")), "", path.relative_to(root).as_posix())
    return counts


def offences(measured: Mapping[K, int], limit: int) -> dict[K, str]:
    """The entries of ``measured`` over ``limit``, with a message each."""
    return {key: f"{key}: {value} > {limit}" for key, value in measured.items() if value > limit}


def compare(found: Mapping[K, str], allowed: Set[K]) -> tuple[list[str], list[str]]:
    """(offences not allow-listed, allow-listed entries that no longer offend)."""
    new = sorted(message for key, message in found.items() if key not in allowed)
    stale = sorted(str(key) for key in allowed if key not in found)
    return new, stale


def check(found: Mapping[K, str], allowed: Set[K], rule: str) -> None:
    """Fail on a new offence, or on an allow-list entry that no longer offends."""
    new, stale = compare(found, allowed)
    assert not new, f"{rule}:\n" + "\n".join(new)
    assert not stale, f"allow-listed but no longer offending ({rule}); remove from the list:\n" + "\n".join(
        stale
    )


def forward_edges(root: Path, backward: Set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Edges between parts of ``pipeline``, leaving out those made only of ``backward`` imports."""
    return {
        edge
        for edge, imps in part_edges(root).items()
        if any((imp.path, imp.target) not in backward for imp in imps)
    }


def pipeline_parts(root: Path) -> set[str]:
    """The subpackages and top-level modules of ``pipeline``."""
    return {p for name, _ in modules(root, "pipeline") if (p := part(name)) is not None}


# The code as it is.


def test_imports_run_one_way() -> None:
    check(one_way_offences(ROOT), AGAINST_ONE_WAY, "imports against flows -> pipeline -> unet")


def test_pipeline_parts_import_along_the_table() -> None:
    check(direction_offences(ROOT, ALLOWED), BACKWARD, "imports between parts of pipeline not in ALLOWED")


def test_the_table_names_every_part_and_has_no_cycle() -> None:
    assert set(ALLOWED) == pipeline_parts(ROOT)
    assert not cycles({(a, b) for a, targets in ALLOWED.items() for b in targets})


def test_pipeline_parts_form_no_cycle() -> None:
    assert not cycles(forward_edges(ROOT, BACKWARD))


def test_no_folder_over_the_module_limit() -> None:
    check(offences(folder_sizes(ROOT), MAX_MODULES_PER_FOLDER), TOO_MANY_MODULES, "modules per folder")


def test_no_module_over_the_line_limit() -> None:
    check(offences(module_lines(ROOT), MAX_MODULE_LINES), TOO_LONG, "lines per module")


def test_no_function_over_the_parameter_limit() -> None:
    check(offences(parameter_counts(ROOT), MAX_PARAMETERS), TOO_MANY_PARAMETERS, "parameters per function")


# The checkers on tiny packages: each finds what it is for.


def tree(root: Path, files: Mapping[str, str]) -> Path:
    """Write ``files`` (path -> text) under ``root``, with empty ``__init__.py`` files."""
    for rel, text in files.items():
        path = root / rel
        for folder in path.relative_to(root).parents:
            if folder != Path("."):
                (root / folder).mkdir(exist_ok=True)
                (root / folder / "__init__.py").touch()
        path.write_text(text, encoding="utf-8")
    return root


def test_one_way_finds_deferred_and_type_checking_imports(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "pipeline/errors.py": "",
            "pipeline/engine/infer.py": "",
            "unet/fine.py": "from pipeline.errors import InputError\nfrom pipeline import errors\n",
            "unet/deferred.py": "def load():\n    from pipeline.engine import infer\n",
            "unet/typing_only.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pipeline.engine.infer\n"
            ),
            "pipeline/engine/up.py": "from ...flows import demo\n",
            "flows/demo.py": "import pipeline.engine.infer\nimport unet.fine\n",
        },
    )
    assert set(one_way_offences(root)) == {
        ("unet/deferred.py", "pipeline.engine.infer"),
        ("unet/typing_only.py", "pipeline.engine.infer"),
        ("pipeline/engine/up.py", "flows.demo"),
    }


def test_direction_and_cycles_are_found(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "pipeline/errors.py": "",
            "pipeline/sources/image.py": "from pipeline.errors import InputError\n",
            "pipeline/sources/dicom.py": "def f():\n    from ..ingest.store import ZArray\n",
            "pipeline/ingest/store.py": "from pipeline.sources import image\n",
        },
    )
    allowed = {"errors": frozenset(), "sources": BASE, "ingest": BASE | {"sources"}}
    backward = {("pipeline/sources/dicom.py", "pipeline.ingest.store")}
    assert set(direction_offences(root, allowed)) == backward
    assert cycles(forward_edges(root, frozenset())) == [["ingest", "sources", "ingest"]]
    assert not cycles(forward_edges(root, backward))
    assert pipeline_parts(root) == {"errors", "sources", "ingest"}


def test_size_checkers_find_what_is_over_the_limits(tmp_path: Path) -> None:
    nine = ", ".join(f"a{i}" for i in range(8))
    root = tree(
        tmp_path,
        {
            **{f"flows/m{i}.py": "" for i in range(MAX_MODULES_PER_FOLDER + 1)},
            **{f"unet/m{i}.py": "" for i in range(MAX_MODULES_PER_FOLDER)},
            "pipeline/long.py": "x = 1\n" * (MAX_MODULE_LINES + 1),
            "pipeline/short.py": "x = 1\n" * MAX_MODULE_LINES,
            "pipeline/wide.py": (
                f"def nine({nine}, *, k): pass\n"
                f"def eight({nine}, *args, **kwargs): pass\n"
                f"class C:\n    def method(self, {nine}): pass\n"
                f"    @classmethod\n    def build(cls, {nine}, /, k): pass\n"
                f"def outer():\n    def inner(p, {nine}): pass\n"
            ),
        },
    )
    assert set(offences(folder_sizes(root), MAX_MODULES_PER_FOLDER)) == {"flows"}
    assert set(offences(module_lines(root), MAX_MODULE_LINES)) == {"pipeline/long.py"}
    assert set(offences(parameter_counts(root), MAX_PARAMETERS)) == {
        ("pipeline/wide.py", "nine"),
        ("pipeline/wide.py", "C.build"),
        ("pipeline/wide.py", "outer.inner"),
    }


def test_an_allow_list_entry_that_no_longer_offends_fails() -> None:
    found = {"pipeline/long.py": "pipeline/long.py: 401 > 400"}
    check(found, {"pipeline/long.py"}, "lines")
    with pytest.raises(AssertionError, match="no longer offending"):
        check(found, {"pipeline/long.py", "pipeline/split.py"}, "lines")
    with pytest.raises(AssertionError, match="401 > 400"):
        check(found, frozenset(), "lines")
