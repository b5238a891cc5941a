"""The ``flood-mapping`` flow: one scene -> labels COG, flood polygons and areas.

prepare (check + ingest, and the run's device kind and precision, decided once) -> one
``infer-region`` task per region; both on the Dask cluster (GPU workers when the
cluster has any), so the plan's device is what the workers have -> finish (outputs on the scene's grid) ->
report (quick-look, artifacts, done manifest). Tasks exchange the workdir path only;
the workdir lives under ``output_dir`` and survives a failure, so rerunning the same
scene resumes: ingest is skipped and finished chunk rows are kept. Existing outputs are
replaced only when an earlier run of the scene wrote them (stamped in its done manifest
or workdir), or with ``overwrite``.

``output_dir`` may be an ``s3://bucket/prefix``: the workdir follows into the bucket
(``PREFIX/.segpipe/work/NAME``), so region tasks on other machines share only the bucket;
finishing and the report run in the flow's process, write the outputs into a local staging
folder and upload each whole, the done manifest last (``flows.layout``).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.futures import as_completed
from prefect.runtime import flow_run

from flows import layout
from flows.cluster import current_worker, gpu_annotation, task_runner
from flows.logs import library_logs
from flows.names import artifact_key
from flows.reports import RunProgress, flood_markdown, publish_image, publish_markdown
from flows.results import Prepared, RegionRun, SceneResult
from flows.retries import RETRIES, RETRY_DELAYS_S, retry_unexpected
from flows.scenes import object_scene_name, scene_inputs, scene_name
from pipeline.engine.devices import region_device
from pipeline.engine.infer import Progress
from pipeline.errors import UsageError
from pipeline.ingest.in_place import open_image
from pipeline.run.execute import regions as plan_regions
from pipeline.run.execute import run_rows
from pipeline.run.finish import finish_run
from pipeline.run.flood_extent import output_classes
from pipeline.run.layout import WorkdirLayout
from pipeline.run.plan import RunPlan, prepare_run
from pipeline.run.spec import FloodReference, InferenceOptions, Outputs, PolygonSettings, RunSpec
from pipeline.run.workdir import Workdir, pull_all
from pipeline.sinks.atomic import atomic_outputs
from pipeline.sinks.quicklook import workdir_quicklook
from pipeline.sinks.stitch import OutputPaths
from pipeline.storage import gdal_path, is_url, path_of, redact, shown, url_of
from unet.card import load_card

log = logging.getLogger(__name__)

PROGRESS_LOG_S = 30.0


def remote_scene(scene: str | list[str]) -> list[Path] | None:
    """A scene given as URLs (``s3://``, ``https://``): their GDAL paths, looked up when opened
    (None for local files, which ``scene_inputs`` resolves)."""
    parts = [scene] if isinstance(scene, str) else list(scene)
    if not parts or not any(is_url(part) for part in parts):
        return None
    if not all(is_url(part) for part in parts):
        raise UsageError("scene: give local files or URLs, not both")
    return [gdal_path(part) for part in parts]


def reference_path(name: str) -> Path:
    """The ``reference_water`` file: a local one (a reference is read whole, band by band, on
    the scene's grid; one in object storage is refused rather than misread as a local name)."""
    if is_url(name):
        raise UsageError(f"reference_water {redact(name)}: give a local file (not read from object storage)")
    return Path(name)


def scene_inputs_and_name(scene: str | list[str]) -> tuple[list[Path], str]:
    """The scene's inputs and its output stem (a URL's is its object's, never its query's)."""
    remote = remote_scene(scene)
    if remote is None:
        inputs = scene_inputs(scene)
        return inputs, scene_name(inputs)
    return remote, object_scene_name([url_of(path) for path in remote])


def flood_outputs(output_dir: Path, name: str, probabilities: bool) -> dict[str, Path]:
    """Where the scene's outputs go: ``NAME.tif``, ``NAME.gpkg``, ``NAME.stats.json`` (+ probabilities)."""
    outputs = {
        "labels": layout.output(output_dir, name, ".tif"),
        "polygons": layout.output(output_dir, name, ".gpkg"),
        "stats": layout.output(output_dir, name, ".stats.json"),
    }
    if probabilities:
        outputs["probabilities"] = layout.output(output_dir, name, ".probabilities.tif")
    return outputs


def scene_spec(
    inputs: list[Path],
    model: str,
    output_dir: Path,
    name: str,
    inference: InferenceOptions,
    polygons: PolygonSettings,
    probabilities: bool,
) -> RunSpec:
    """The run spec of the scene ``name`` (also what the inbox fingerprints to decide reuse), in a
    workdir under ``output_dir`` that survives a failure, so that a rerun resumes."""
    return RunSpec(
        inputs=inputs,
        model=model,
        outputs=Outputs(**flood_outputs(output_dir, name, probabilities)),
        inference=inference,
        polygons=polygons,
        workdir=layout.workdir(output_dir, name),
        overwrite=True,  # the flow has checked which existing outputs it may replace
    )


@task(name="prepare-scene", cache_policy=NONE)
def prepare_scene(
    spec: RunSpec, output_dir: str, name: str, regions: int, overwrite: bool = False
) -> Prepared:
    """Check the scene ``name`` and the card, ingest the scene to zarr (or resume), plan ``regions``
    row ranges. ``overwrite``: existing outputs the scene's earlier runs did not write may go."""
    with library_logs():
        started = time.perf_counter()
        out = Path(output_dir)
        outputs = flood_outputs(out, name, spec.outputs.probabilities is not None)
        quicklook = layout.output(out, name, ".quicklook.png")
        layout.check_replaceable(out, name, [*outputs.values(), quicklook], overwrite)
        workdir = prepare_run(spec, load_card(spec.model))
        return Prepared(
            workdir=str(workdir),
            regions=plan_regions(workdir, regions),
            seconds=time.perf_counter() - started,
        )


def _progress_logger(rows: tuple[int, int]) -> Progress:
    """An engine progress callback that logs at most every ``PROGRESS_LOG_S`` seconds."""
    last = [time.monotonic()]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_LOG_S or done >= total:
            last[0] = now
            log.info("rows %d-%d: %d/%d patches", rows[0], rows[1], done, total)

    return report


@task(
    name="infer-region",
    cache_policy=NONE,
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAYS_S,
    retry_condition_fn=retry_unexpected,
    tags=["gpu"],
)
def infer_region(workdir: str, rows: tuple[int, int], device: str | None = None) -> RegionRun:
    """Run the engine over one region (resumable: done chunk rows are skipped)."""
    with library_logs():
        started = time.perf_counter()
        path = Path(workdir)
        plan = RunPlan.load(path)
        used = str(region_device(device, plan.device, plan.precision))
        stats = run_rows(path, rows, device, progress=_progress_logger(rows))
        return RegionRun(
            rows=rows,
            patches=stats.patches,
            seconds=time.perf_counter() - started,
            device=used,
            worker=current_worker(),
        )


@task(name="finish-scene", cache_policy=NONE)
def finish_scene(workdir: str, staged: dict[str, str] | None = None) -> dict[str, Any]:
    """Write the COG, polygons and statistics on the scene's grid (atomically); with ``staged``
    (output kind -> local file), there instead, for ``report_scene`` to upload."""
    with library_logs():
        paths = None
        if staged is not None:
            local = {kind: Path(file) for kind, file in staged.items() if kind != "quicklook"}
            paths = OutputPaths(**local)
        statistics = finish_run(Path(workdir), paths=paths)
        if statistics is None:
            raise UsageError(f"{workdir}: the run did not ask for statistics")
        return statistics


@task(name="report-scene", cache_policy=NONE)
def report_scene(
    result: SceneResult, workdir: str, quicklook: str, staged: dict[str, str] | None = None
) -> SceneResult:
    """Quick-look PNG and markdown report as artifacts; then the done manifest, written last.
    With ``staged`` (outputs in a bucket, written locally): every output uploaded first."""
    with library_logs():
        out = Path(quicklook).parent
        arrays = WorkdirLayout(pull_all(Path(workdir)))
        png = workdir_quicklook(
            open_image(arrays.image, arrays.image_record),
            arrays.labels,
            Path(result.outputs["labels"] if staged is None else staged["labels"]),
            result.classes,
            result.statistics,
            f"{result.name}: {result.model}",
        )
        workdir_state = Workdir.open(Path(workdir))
        outputs = {**result.outputs, "quicklook": shown(quicklook)}
        stamps: dict[str, Any]
        if staged is None:
            with atomic_outputs([Path(quicklook)], ready=workdir_state.record) as (temporary,):
                temporary.write_bytes(png)
            stamps = layout.stamp_outputs(Path(path) for path in outputs.values())
        else:
            Path(staged["quicklook"]).write_bytes(png)
            stamps = layout.upload_outputs({outputs[kind]: Path(file) for kind, file in staged.items()})
        result = result.model_copy(
            update={"outputs": outputs, "fingerprint": workdir_state.fingerprint, "stamps": stamps}
        )
        key = artifact_key("flood", result.name)
        publish_image(f"{key}-quicklook", png, f"{result.name}: classes over the input, with their areas")
        publish_markdown(f"{key}-report", flood_markdown(result), f"Flood mapping report for {result.name}")
        layout.write_manifest(out, result.name, result.model_dump(mode="json"))
        layout.remove_workdir(out, result.name)
        return result


def _run_name() -> str:
    scene = flow_run.parameters.get("scene", "")
    try:
        return f"flood-{scene_inputs_and_name(scene)[1]}"
    except (OSError, ValueError):
        return "flood-mapping"


@flow(name="flood-mapping", flow_run_name=_run_name, validate_parameters=True)
def flood_mapping(
    scene: str | list[str],
    model: str,
    output_dir: str,
    regions: int = 2,
    dask_address: str | None = None,
    probabilities: bool = False,
    inference: InferenceOptions | None = None,
    polygons: PolygonSettings | None = None,
    allow_remote: bool = False,
    overwrite: bool = False,
    pre_event: str | None = None,
    reference_water: str | None = None,
    reference_threshold: float | None = None,
) -> SceneResult:
    """Segment one scene into ``NAME.tif`` (COG), ``NAME.gpkg``, ``NAME.stats.json`` under ``output_dir``.

    ``scene``: a GeoTIFF/VRT, a list of band files (stacked in order), or a STAC Item
    JSON with local assets, or the ``s3://``/``https://`` URLs of rasters (read in place,
    docs/cluster.md); NAME is its sanitised stem (the Item's id, the object's name). ``model``: a
    card path or bundled card name. ``regions``: row ranges inferred as separate tasks
    on the Dask cluster at ``dask_address`` (a local one when empty). ``allow_remote``:
    files the scene names (VRT sources, STAC assets) may be remote or outside its folder
    (docs/SECURITY.md). Existing files the scene's earlier runs did not write are replaced
    only with ``overwrite`` (which also starts the workdir clean). ``pre_event`` (a scene file or URL) or
    ``reference_water`` (a water mask or occurrence raster with ``reference_threshold``, or
    polygons): the labels become land, permanent_water and flood_water (docs/outputs.md).
    """
    with library_logs():
        if regions < 1:
            raise UsageError(f"regions must be >= 1, got {regions}")
        logger = get_run_logger()
        started = time.perf_counter()
        inference = inference or InferenceOptions()
        polygons = polygons or PolygonSettings()
        inputs, name = scene_inputs_and_name(scene)
        reference = FloodReference(
            reference_water=None if reference_water is None else reference_path(reference_water),
            reference_threshold=reference_threshold,
            pre_event=None if pre_event is None else path_of(pre_event),
        )
        out = layout.output_folder(output_dir)
        if not is_url(out):
            out.mkdir(parents=True, exist_ok=True)
        card = load_card(model)
        spec = scene_spec(inputs, str(card.card_path), out, name, inference, polygons, probabilities)
        spec = spec.model_copy(
            update={"resume": not overwrite, "allow_remote": allow_remote, "reference": reference}
        )
        runner_for_regions = task_runner(dask_address)  # a refused scheduler fails before the ingest
        key = artifact_key("flood", name)
        progress = RunProgress(f"{key}-progress", regions + 2, f"flood mapping {name}")

        runs: list[RegionRun] = []
        with runner_for_regions as runner:
            with gpu_annotation(runner.client) as gpu:
                # prepared on a worker like the regions: the plan's device is what the workers have
                prepared = runner.submit(
                    prepare_scene,
                    parameters={
                        "spec": spec,
                        "output_dir": str(out),
                        "name": name,
                        "regions": regions,
                        "overwrite": overwrite,
                    },
                ).result()
                progress.advance("ingested")
                logger.info("%s: %d region(s) %s", name, len(prepared.regions), prepared.regions)
                infer_started = time.perf_counter()
                futures = [
                    runner.submit(
                        infer_region.with_options(task_run_name=f"infer-rows-{lo}-{hi}"),
                        parameters={"workdir": prepared.workdir, "rows": (lo, hi), "device": None},
                    )
                    for lo, hi in prepared.regions
                ]
            for future in as_completed(futures):
                run = future.result()
                runs.append(run)
                progress.advance(f"rows {run.rows[0]}-{run.rows[1]} on {run.device}")
        finish_started = time.perf_counter()
        outputs = flood_outputs(out, name, probabilities)
        quicklook = layout.output(out, name, ".quicklook.png")
        staging = Path(tempfile.mkdtemp(prefix="segpipe-outputs-")) if is_url(out) else None
        try:
            staged = None  # outputs in a bucket: written here, uploaded by report_scene
            if staging is not None:
                named = {**outputs, "quicklook": quicklook}
                staged = {kind: str(staging / path.name) for kind, path in named.items()}
            statistics = finish_scene(prepared.workdir, staged)
            progress.advance("outputs written")
            result = SceneResult(
                name=name,
                inputs=[shown(p) for p in inputs],
                model=card.name,
                classes=output_classes(card, reference),
                outputs={kind: shown(path) for kind, path in outputs.items()},
                statistics=statistics,
                regions=sorted(runs, key=lambda run: run.rows),
                timings={
                    "prepare (check, ingest)": prepared.seconds,
                    "infer (all regions, wall)": finish_started - infer_started,
                    "finish (COG, polygons, stats)": time.perf_counter() - finish_started,
                    "total": time.perf_counter() - started,
                },
                gpu_requested=gpu,
                flow_run_id=str(flow_run.id or ""),
            )
            result = report_scene(result, prepared.workdir, str(quicklook), staged)
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
        logger.info("%s: wrote %s", name, ", ".join(result.outputs.values()))
        return result
