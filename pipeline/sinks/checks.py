"""Output paths that fit the input, checked before any work: suffixes, folders, areas.

Which suffixes fit which input is the sink registry's answer (``pipeline.sinks.registry``).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import InputError, UsageError
from pipeline.grids.areas import check_geometry
from pipeline.sinks.atomic import check_writable
from pipeline.sinks.polygons import check_polygon_output
from pipeline.sinks.registry import OPTIONS, SINKS, claiming, offered, sink_for
from pipeline.sinks.stitch import OutputPaths
from pipeline.sources.image import SourceImage
from pipeline.storage import is_url


def check_outputs(paths: OutputPaths, source: SourceImage, inputs: list[Path]) -> None:
    """Outputs the input can have, suffixes that fit it, writable folders, all distinct, none an input."""
    kind, attrs = source.kind, source.attrs
    for role, path in paths.by_role():
        for sink in claiming(role, path):
            reason = sink.refusal(path, attrs, inputs)
            if reason is not None:
                raise UsageError(reason)
        if not offered(role, kind, attrs):
            made_for = sorted({k for sink in SINKS.values() if sink.role == role for k in sink.sources})
            raise UsageError(
                f"{OPTIONS[role]} {path}: {role} are made for {' and '.join(made_for)} inputs only"
            )
    if kind == "raster" and attrs.get("crs") is None and (paths.polygons or paths.stats):
        raise InputError(
            f"{inputs[0]}: has no CRS, so polygons and areas (--polygons, --stats) cannot be placed"
        )
    for role, path in paths.by_role():
        sink_for(role, path, kind, attrs)
        if not is_url(path):  # an output named by URL is written locally and uploaded by its caller
            check_writable(path)
    resolved = [path.resolve() for path in paths.requested()]
    if len(set(resolved)) != len(resolved):
        raise UsageError("-o, --probabilities, --polygons and --stats must name different files")
    taken = {path.resolve() for path in [*inputs, *source.paths]}
    for path in paths.requested():
        if path.resolve() in taken:
            raise UsageError(f"{path}: would overwrite an input")


def check_areas(paths: OutputPaths, source: SourceImage, inputs: list[Path]) -> None:
    """Polygons and areas need a grid with ground areas (a CRS with an ellipsoid): refused before work."""
    if source.kind != "raster" or not (paths.polygons or paths.stats):
        return
    try:
        check_geometry(source.attrs)
    except InputError as exc:
        raise InputError(f"{inputs[0]}: --polygons/--stats: {exc}") from None
    if paths.polygons is not None:
        check_polygon_output(paths.polygons, source.attrs.get("crs"))
