"""Output paths that fit the input, checked before any work: suffixes, folders, areas."""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import InputError, UsageError
from pipeline.grids.areas import check_geometry
from pipeline.sinks.atomic import check_writable
from pipeline.sinks.dicom_seg import is_seg
from pipeline.sinks.polygons import check_polygon_output
from pipeline.sinks.stitch import OutputPaths
from pipeline.sources.image import SourceImage

RASTER_OUTPUTS = (".tif", ".tiff")
VOLUME_OUTPUTS = (".nii", ".nii.gz")
POLYGON_OUTPUTS = (".gpkg", ".geojson", ".json")


def check_outputs(paths: OutputPaths, source: SourceImage, inputs: list[Path]) -> None:
    """Suffixes that fit the input, writable folders, all distinct, none of them an input."""
    kind = source.kind
    dicom = source.attrs.get("source_format") == "dicom"
    if is_seg(paths.labels) and not dicom:
        raise UsageError(
            f"-o {paths.labels}: a DICOM SEG needs source DICOM images, but {inputs[0]} is not a DICOM "
            "series; write .nii or .nii.gz"
        )
    labels_allowed = (*VOLUME_OUTPUTS, ".dcm") if dicom else VOLUME_OUTPUTS
    suffixes = {
        "-o": (paths.labels, RASTER_OUTPUTS if kind == "raster" else labels_allowed),
        "--probabilities": (paths.probabilities, RASTER_OUTPUTS if kind == "raster" else VOLUME_OUTPUTS),
        "--polygons": (paths.polygons, POLYGON_OUTPUTS),
        "--stats": (paths.stats, (".json",)),
    }
    if paths.polygons is not None and kind != "raster":
        raise UsageError(f"--polygons {paths.polygons}: polygons are made for raster inputs only")
    if kind == "raster" and source.attrs.get("crs") is None and (paths.polygons or paths.stats):
        raise InputError(
            f"{inputs[0]}: has no CRS, so polygons and areas (--polygons, --stats) cannot be placed"
        )
    for option, (path, allowed) in suffixes.items():
        if path is None:
            continue
        if not path.name.lower().endswith(allowed):
            raise UsageError(f"{option} {path}: a {kind} input needs a {' or '.join(allowed)} file here")
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
