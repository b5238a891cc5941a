"""Weights shipped inside an installed package: which packages may provide them, and where they lie.

``weights_package`` names a package that ships weights: one that declares itself in the
entry-point group ``segpipe.weights`` (``[project.entry-points."segpipe.weights"] name =
"name"``; the entry point is never loaded), or one of the packages the bundled cards use,
which predate it. A package's weights must lie in its folder or be files its distribution
installed (deepbet installs its networks beside the package, reached with ``..``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from pipeline.errors import CardError, NotFoundError

WEIGHTS_GROUP = "segpipe.weights"
WEIGHT_PACKAGES = frozenset({"deepbet", "ukis_csmask"})


def check_provider(package: str) -> str:
    """``package`` if it may provide weights; a ``ValueError`` naming the providers otherwise."""
    if package in WEIGHT_PACKAGES:
        return package
    declared = {entry.name for entry in importlib.metadata.entry_points(group=WEIGHTS_GROUP)}
    if package not in declared:
        known = ", ".join(sorted(WEIGHT_PACKAGES | declared))
        raise ValueError(
            f"'{package}' is not a segpipe weight provider (one of {known}, or a package that declares "
            f"an entry point in group '{WEIGHTS_GROUP}')"
        )
    return package


def _installed(folder: Path) -> set[Path]:
    """Every file installed by the distribution that provides the package in ``folder``."""
    files: set[Path] = set()
    for names in importlib.metadata.packages_distributions().get(folder.name, []):
        for record in importlib.metadata.distribution(names).files or []:
            files.add(Path(str(record.locate())).resolve())
    return files


def in_package(package: str, weights: Path, where: str | Path) -> Path:
    """``weights`` inside installed ``package``; errors name ``where`` (the card)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise NotFoundError(
            f"{where}: field 'weights_package': package '{package}' is not installed "
            "(pip install 'segpipe[models]')"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    path = folder / weights
    resolved = path.resolve()
    if not resolved.is_relative_to(folder.resolve()) and resolved not in _installed(folder):
        raise CardError(
            f"{where}: field 'weights': '{weights}' leaves the folder of package "
            f"'{package}' and is no file that package installed"
        )
    return path
