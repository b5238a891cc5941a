"""Quick-look PNGs of a mask over its input, with a legend of class names and areas/volumes.

Rasters: the input as a composite (VV/VH for Sentinel-1, NIR/red/green false colour when
those bands are named, else the first three bands or grey), each band stretched between
its 2nd and 98th percentiles, read downsampled (at most ``max_side`` pixels), with the
non-background classes tinted and nodata dimmed. Volumes: three orthogonal slices
(sagittal, coronal, axial) through the centre of the mask, at the voxels' physical
aspect, anterior/superior up. The inputs are arrays already on the mask's grid (the
workdir's ``image.zarr``, or the opened source), so a quick-look never reads a scene
twice. Drawn with matplotlib (Agg, imported here only: it is slow to import and only
pictures need it), which gives legends with text and exact aspect ratios for free.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from pipeline.ingest.prepare import StoredImage

PALETTE = (
    "#1e88e5",  # blue: class 1 (water, in flood cards)
    "#e53935",
    "#43a047",
    "#fdd835",
    "#8e24aa",
    "#00acc1",
    "#fb8c00",
    "#d81b60",
)
ALPHA = 0.55
LEGEND_ENTRY_INCHES = 2.6
Amounts = Mapping[str, float]


def class_colour(index: int) -> NDArray[np.float32]:
    """RGB 0..255 of class ``index`` (>= 1) in the palette."""
    hex_colour = PALETTE[(index - 1) % len(PALETTE)]
    return np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.float32)


def preview_step(shape: Sequence[int], max_side: int) -> int:
    """The stride that brings the longer side of ``shape`` to at most ``max_side`` (never < 1)."""
    return max(1, -(-max(int(n) for n in shape) // max_side))


def stretch(values: NDArray[Any], valid: NDArray[np.bool_] | None = None) -> NDArray[np.uint8]:
    """Linear 2-98 percentile stretch of ``values`` to 0..255 (0 where not valid or not finite)."""
    data = np.asarray(values, dtype=np.float64)
    usable = np.isfinite(data) if valid is None else valid & np.isfinite(data)
    if not usable.any():
        return np.zeros(data.shape, dtype=np.uint8)
    low, high = np.percentile(data[usable], (2, 98))
    scaled = (data - low) / (high - low) if high > low else np.zeros_like(data)
    out = np.clip(np.nan_to_num(scaled, nan=0.0) * 255.0, 0, 255).astype(np.uint8)
    out[~usable] = 0
    return out


def overlay(background: NDArray[np.uint8], labels: NDArray[Any], nodata: int | None) -> NDArray[np.uint8]:
    """RGB ``background`` with each non-background class tinted in its palette colour."""
    out = background.astype(np.float32)
    for value in np.unique(labels):
        if value == 0 or (nodata is not None and value == nodata):
            continue
        mask = labels == value
        out[mask] = (1.0 - ALPHA) * out[mask] + ALPHA * class_colour(int(value))
    if nodata is not None:
        out[labels == nodata] *= 0.3
    return np.clip(out, 0, 255).astype(np.uint8)


def composite_bands(names: Sequence[str | None]) -> tuple[list[int], str]:
    """Which bands make the RGB background, and what to call it.

    Sentinel-1: R = VV, G = VH, B = VV - VH (water is dark in both). Optical: NIR, red,
    green (vegetation red, water dark). Otherwise the first three bands, or grey.
    """
    lower = [(name or "").lower() for name in names]
    if "vv" in lower and "vh" in lower:
        return [lower.index("vv"), lower.index("vh"), -1], "VV / VH / VV-VH"
    for nir, red, green in (("nir", "red", "green"), ("b08", "b04", "b03"), ("b8", "b4", "b3")):
        if {nir, red, green} <= set(lower):
            return [lower.index(nir), lower.index(red), lower.index(green)], "false colour (NIR, red, green)"
    if len(names) >= 3:
        return [0, 1, 2], "bands 1-3"
    return [0, 0, 0], "band 1"


def _background(
    bands: NDArray[Any], names: Sequence[str | None], valid: NDArray[np.bool_]
) -> tuple[NDArray[np.uint8], str]:
    picked, title = composite_bands(names)
    channels = []
    for index in picked:
        # index -1: the VV - VH difference (a ratio in dB), computed here
        band = bands[picked[0]] - bands[picked[1]] if index == -1 else bands[index]
        channels.append(stretch(band, valid))
    return np.stack(channels, axis=-1), title


def _legend_label(name: str, amount: float | None, unit: str) -> str:
    return (
        name
        if amount is None
        else f"{name}: {amount:,.3f} {unit}"
        if amount < 10
        else (f"{name}: {amount:,.1f} {unit}")
    )


def _render(
    panels: list[tuple[NDArray[np.uint8], tuple[float, float], str]],
    classes: Sequence[str],
    amounts: Amounts | None,
    unit: str,
    title: str,
    present: set[int],
    nodata: bool = False,
) -> bytes:
    """PNG bytes of ``panels`` (RGB image, (width, height) in physical units, caption) side by side."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    widths = [extent[0] / extent[1] for _, extent, _ in panels]
    figure_width = min(4.2 * sum(widths), 15)
    figure = Figure(figsize=(figure_width, 4.8), dpi=110, layout="constrained")
    axes = figure.subplots(1, len(panels), width_ratios=widths, squeeze=False)[0]
    for ax, (image, (width, height), caption) in zip(axes, panels, strict=True):
        ax.imshow(image, extent=(0, width, 0, height), interpolation="nearest")
        ax.set_title(caption, fontsize=9)
        ax.set_axis_off()
    handles = [
        Patch(
            facecolor=PALETTE[(index - 1) % len(PALETTE)],
            alpha=ALPHA,
            label=_legend_label(name, None if amounts is None else amounts.get(name), unit),
        )
        for index, name in enumerate(classes)
        if index > 0 and (index in present or (amounts is not None and name in amounts))
    ]
    if nodata:
        handles.append(Patch(facecolor="black", alpha=0.7, label="no data (dimmed)"))
    if not handles:
        handles.append(Patch(facecolor="none", label="no foreground"))
    # about 2.6 inches per entry ("permanent_water: 0.877 km2"), so no entry is cut at the edges
    columns = max(1, min(len(handles), 4, int(figure_width // LEGEND_ENTRY_INCHES)))
    figure.legend(handles=handles, loc="outside lower center", ncols=columns, fontsize=9)
    figure.suptitle(title, fontsize=10)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def raster_quicklook(
    image: Any,
    band_names: Sequence[str | None],
    labels: NDArray[Any],
    nodata: int | None,
    classes: Sequence[str],
    areas_km2: Amounts | None = None,
    title: str = "",
    max_side: int = 768,
) -> bytes:
    """PNG of ``labels`` over ``image`` ``(C, rows, cols)`` (a numpy, dask or zarr array).

    ``labels`` is the mask read at the preview size (e.g. from the COG's overviews); the
    image is read at the same size by striding, so both may be full-resolution sources.
    """
    rows, cols = (int(n) for n in image.shape[1:])
    step = preview_step((rows, cols), max_side)
    bands = np.asarray(image[:, ::step, ::step], dtype=np.float32)
    classes_at = _resize_nearest(np.asarray(labels), bands.shape[1:])
    valid = np.ones(bands.shape[1:], dtype=bool) if nodata is None else classes_at != nodata
    background, composite = _background(bands, band_names, valid)
    picture = overlay(background, classes_at, nodata)
    present = {int(v) for v in np.unique(classes_at) if nodata is None or v != nodata}
    return _render(
        [(picture, (float(cols), float(rows)), composite)],
        classes,
        areas_km2,
        "km²",
        title,
        present,
        nodata=nodata is not None and bool((classes_at == nodata).any()),
    )


def _resize_nearest(values: NDArray[Any], shape: Sequence[int]) -> NDArray[Any]:
    """``values`` sampled to ``shape`` at the nearest pixel centres."""
    index = [
        np.minimum(((np.arange(n) + 0.5) * size / n).astype(int), size - 1)
        for n, size in zip(shape, values.shape, strict=True)
    ]
    return values[np.ix_(*index)]


def mask_centre(labels: NDArray[Any]) -> tuple[int, int, int]:
    """The voxel at the centre of the mask's bounding box (the volume's centre when empty)."""
    found = np.nonzero(labels)
    if not found[0].size:
        return tuple(int(n) // 2 for n in labels.shape)  # type: ignore[return-value]
    return tuple(int(axis.min() + axis.max()) // 2 for axis in found)  # type: ignore[return-value]


def volume_quicklook(
    image: Any,
    labels: Any,
    spacing: Sequence[float],
    classes: Sequence[str],
    volumes_ml: Amounts | None = None,
    title: str = "",
    max_side: int = 256,
) -> bytes:
    """PNG of three orthogonal slices through the mask's centre: ``image`` ``(I, J, K)`` and
    ``labels`` on the same grid, both in RAS voxel order, ``spacing`` in mm per RAS axis.
    """
    mask = np.asarray(labels)
    centre = mask_centre(mask)
    panels = []
    for axis, caption in ((0, "sagittal"), (1, "coronal"), (2, "axial")):
        where: list[int | slice] = [slice(None)] * 3
        where[axis] = centre[axis]
        across = [a for a in range(3) if a != axis]
        # rows top to bottom = the second in-plane axis descending (superior/anterior up)
        grey = np.asarray(image[tuple(where)], dtype=np.float32).T[::-1]
        classes_in = mask[tuple(where)].T[::-1]
        step = preview_step(grey.shape, max_side)
        grey, classes_in = grey[::step, ::step], classes_in[::step, ::step]
        background = np.repeat(stretch(grey)[..., np.newaxis], 3, axis=-1)
        width = mask.shape[across[0]] * float(spacing[across[0]])
        height = mask.shape[across[1]] * float(spacing[across[1]])
        label = f"{caption} ({'IJK'[axis].lower()} = {centre[axis]})"
        panels.append((overlay(background, classes_in, None), (width, height), label))
    present = {int(v) for v in np.unique(mask)}
    return _render(panels, classes, volumes_ml, "mL", title, present)


def amounts(statistics: Mapping[str, Any] | None, key: str) -> dict[str, float] | None:
    """``{class: statistics["classes"][class][key]}`` (areas or volumes) from a stats record."""
    if not statistics:
        return None
    found = statistics.get("classes", {})
    return {name: float(entry[key]) for name, entry in found.items() if key in entry}


def read_labels(cog: Path, shape: tuple[int, int]) -> tuple[NDArray[np.uint8], int | None]:
    """The labels COG read at ``shape`` (nearest, from its overviews when they fit) and its nodata."""
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(cog) as src:
        labels = src.read(1, out_shape=shape, resampling=Resampling.nearest)
        return labels, None if src.nodata is None else int(src.nodata)


def raster_file_quicklook(
    image: Any,
    band_names: Sequence[str | None],
    labels_cog: Path,
    classes: Sequence[str],
    statistics: Mapping[str, Any] | None,
    title: str,
    max_side: int = 768,
) -> bytes:
    """:func:`raster_quicklook` of the labels COG ``labels_cog`` over ``image`` (same grid)."""
    step = preview_step(image.shape[1:], max_side)
    shape = (-(-int(image.shape[1]) // step), -(-int(image.shape[2]) // step))
    labels, nodata = read_labels(labels_cog, shape)
    areas = amounts(statistics, "area_km2")
    return raster_quicklook(image, band_names, labels, nodata, classes, areas, title, max_side)


def ras_spacing(geometry: Mapping[str, Any]) -> tuple[float, float, float]:
    """Voxel spacing (mm) along the RAS axes, from a volume's stored ``ornt`` and ``zooms``."""
    spacing = [1.0, 1.0, 1.0]
    for stored_axis, (ras_axis, _) in enumerate(geometry["ornt"]):
        spacing[int(ras_axis)] = float(geometry["zooms"][stored_axis])
    return spacing[0], spacing[1], spacing[2]


def workdir_quicklook(
    image: StoredImage,
    labels_zarr: Path,
    labels_cog: Path | None,
    classes: Sequence[str],
    statistics: Mapping[str, Any] | None,
    title: str,
) -> bytes:
    """The quick-look of a finished run from its workdir's arrays (before it is removed) and outputs only.

    ``image`` is the workdir's (``pipeline.ingest.in_place.open_image``). Rasters take the
    labels from the written COG (it carries the nodata), volumes from the workdir's
    ``labels_zarr`` (RAS voxel order, like ``image``).
    """
    from pipeline.ingest.store import open_array

    attrs: dict[str, Any] = dict(image.attrs)
    if attrs.get("kind") == "volume":
        labels = np.asarray(open_array(labels_zarr)[...])
        volumes = amounts(statistics, "volume_ml")
        return volume_quicklook(
            np.asarray(image[0]), labels, ras_spacing(attrs["geometry"]), classes, volumes, title
        )
    if labels_cog is None:
        raise ValueError(f"{labels_zarr.parent}: a raster quick-look needs the labels COG")
    return raster_file_quicklook(image, attrs["band_names"], labels_cog, classes, statistics, title)


def source_quicklook(
    source: Any, output: Path, classes: Sequence[str], statistics: Mapping[str, Any] | None, title: str
) -> bytes:
    """The quick-look of ``output`` (a labels COG or NIfTI mask) over the opened input ``source``."""
    if source.kind == "volume":
        import nibabel as nib

        mask = np.asarray(nib.as_closest_canonical(nib.load(output)).dataobj)  # type: ignore[no-untyped-call]
        volumes = amounts(statistics, "volume_ml")
        return volume_quicklook(source.data[0], mask, ras_spacing(source.attrs), classes, volumes, title)
    return raster_file_quicklook(source.data, source.band_names, output, classes, statistics, title)
