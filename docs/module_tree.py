"""Print the package tree with line counts, for docs/DESIGN.md's "Module map".

Run ``python docs/module_tree.py`` from the repository root and paste the output into the
tree block. ``pipeline``'s subpackages come in data-path order; the rest alphabetically.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "unet", "flows")
ORDER = ("sources", "grids", "ingest", "engine", "sinks", "run", "train")
WIDTH = 40


def lines(path: Path) -> int:
    """Lines of a module, or of every module under a folder."""
    if path.is_dir():
        return sum(lines(module) for module in path.rglob("*.py"))
    return len(path.read_text(encoding="utf-8").splitlines())


def _key(path: Path) -> tuple[int, int, str]:
    """Modules before folders; folders in data-path order, then by name."""
    if path.is_file():
        return (0, 0, path.name)
    return (1, ORDER.index(path.name) if path.name in ORDER else len(ORDER), path.name)


def tree(folder: Path, depth: int = 0) -> list[str]:
    """One line per module and folder under ``folder``: indented name, then its line count."""
    name = f"{'  ' * depth}{folder.name}/"
    result = [f"{name:<{WIDTH}}{lines(folder):>6}"]
    children = [
        child
        for child in folder.iterdir()
        if (child.suffix == ".py" and child.name != "__init__.py") or (child / "__init__.py").is_file()
    ]
    for child in sorted(children, key=_key):
        if child.is_dir():
            result += tree(child, depth + 1)
        else:
            label = f"{'  ' * (depth + 1)}{child.name}"
            result.append(f"{label:<{WIDTH}}{lines(child):>6}")
    return result


def main() -> None:
    for package in PACKAGES:
        print("\n".join(tree(ROOT / package)))


if __name__ == "__main__":
    main()
