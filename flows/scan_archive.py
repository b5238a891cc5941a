"""The ``scan-archive`` flow: every case of a folder of scans -> a NIfTI mask (+ DICOM SEG).

Each case (a NIfTI/NRRD file, or a folder holding a DICOM series) is one task on the
Dask cluster (GPU workers when it has any). DICOM cases get both outputs from one
inference: the SEG is written from the same workdir, whose chunk rows are all done.
A case the library refuses (``SegpipeError``: unreadable file, no usable series) is
quarantined with its reason and not retried; unexpected errors are retried, and if
they persist the case is reported as failed and the run ends Failed after the report
is written. Inputs are only read, never moved or copied; outputs are written
atomically, so a broken case leaves no mask. A finished case is reused only when its
fingerprint (input, model, options) is unchanged; otherwise it is recomputed and the
report says why. With ``pseudonymize`` cases are named by a keyed hash
(``flows.pseudonyms``) in every output name, log line, task run, artifact and report, and
a case's paths are replaced by its ID in its logs and errors.

``output_dir`` may be an ``s3://bucket/prefix`` (the archive stays a local folder): the same
names under the prefix. A case's workdir follows into the bucket (``PREFIX/.segpipe/work/NAME``,
so a retry on another worker resumes), except a pseudonymised case's, which stays on the
worker (``flows.pseudonyms.private_workdir``); its outputs are written into a local staging
folder, uploaded whole, and its done manifest, stamping each by its ETag, goes last. The
report and ``pseudonyms.csv`` are uploaded whole too (``flows.layout``).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.futures import as_completed
from prefect.runtime import flow_run

from flows import layout
from flows.cases import Case, case_outputs, case_spec, find_cases
from flows.cluster import current_worker, gpu_annotation, task_runner
from flows.logs import library_logs
from flows.names import artifact_key
from flows.pseudonyms import (
    hidden_paths,
    hide_fingerprint,
    hide_inputs,
    key_from_environment,
    pseudonym,
    write_mapping,
)
from flows.reports import (
    RunProgress,
    archive_markdown,
    case_rows,
    publish_image,
    publish_markdown,
    publish_table,
)
from flows.results import ArchiveReport, CaseResult
from flows.retries import RETRIES, RETRY_DELAYS_S, retry_unexpected
from pipeline.errors import InputError, SegpipeError, UsageError
from pipeline.ingest.in_place import open_image
from pipeline.run.execute import run_rows
from pipeline.run.fingerprint import difference, referenced_files
from pipeline.run.finish import finish_run
from pipeline.run.layout import WorkdirLayout
from pipeline.run.plan import RunPlan, prepare_run, run_fingerprint, workdir_of
from pipeline.run.spec import InferenceOptions, Outputs, RunSpec
from pipeline.run.workdir import Workdir, pull_all
from pipeline.sinks.atomic import atomic_outputs
from pipeline.sinks.quicklook import workdir_quicklook
from pipeline.sinks.stitch import OutputPaths
from pipeline.storage import is_url, shown, url_of
from unet.card import ModelCard, load_card

REPORT = "scan-archive-report.json"
REPORT_UNIT = ".scan-archive-report"  # its done manifest; case names never start with a dot


def _volumes(statistics: dict[str, Any] | None) -> dict[str, float]:
    classes: dict[str, Any] = (statistics or {}).get("classes", {})
    return {name: float(entry["volume_ml"]) for name, entry in list(classes.items())[1:]}


@task(
    name="segment-case",
    cache_policy=NONE,
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAYS_S,
    retry_condition_fn=retry_unexpected,
    tags=["gpu"],
)
def segment_case(
    case: Case,
    card: str,
    output_dir: str,
    inference: InferenceOptions,
    overwrite: bool = False,
    reason: str = "",
    allow_remote: bool = False,
) -> CaseResult:
    """Segment one case into its outputs; its workdir is kept for a retry unless the input is bad.

    Existing outputs are replaced only when an earlier run of this case wrote them, or with
    ``overwrite`` (which also starts the workdir clean); ``reason`` says why it is (re)computed.
    With ``output_dir`` in a bucket the outputs are written into a local staging folder and
    uploaded whole once all are written; the done manifest goes last, in both cases.
    """
    hidden = hidden_paths(Path(case.path), case.name) if case.pseudonymised else nullcontext()
    with library_logs(), hidden:
        out = Path(output_dir)
        named = {**case_outputs(out, case), "quicklook": layout.output(out, case.name, ".quicklook.png")}
        layout.check_replaceable(out, case.name, named.values(), overwrite)
        staging = Path(tempfile.mkdtemp(prefix="segpipe-outputs-")) if is_url(out) else None
        try:
            staged = None if staging is None else {kind: staging / path.name for kind, path in named.items()}
            spec = case_spec(out, case, card, inference)
            spec = spec.model_copy(update={"resume": not overwrite, "allow_remote": allow_remote})
            result = _segment(case, spec, named, staged, reason)
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
        layout.write_manifest(out, case.name, result.model_dump(mode="json"))
        layout.drop_workdir(workdir_of(spec))
        return result


def _segment(
    case: Case, spec: RunSpec, named: dict[str, Path], staged: dict[str, Path] | None, reason: str
) -> CaseResult:
    """Run ``spec`` and write the case's outputs ``named`` (into their ``staged`` files when given,
    then uploaded under their names); the result's stamps say what was stored."""
    model = load_card(spec.model)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[step] = now - clock
        clock = now

    written = staged or named  # where finishing writes
    try:
        workdir = prepare_run(spec, model)
        device = RunPlan.load(workdir).device
        lap("prepare")
        run_rows(workdir)
        lap("infer")
        paths = None if staged is None else OutputPaths(labels=staged["mask"], stats=staged["stats"])
        statistics = finish_run(workdir, paths=paths)
        if case.pseudonymised:
            hide_inputs(written["stats"], case.input)
        lap("write")
        if "seg" in named:
            # Same fingerprint, same workdir: prepare resumes and every chunk row is done.
            seg_spec = spec.model_copy(update={"outputs": Outputs(labels=named["seg"]), "resume": True})
            prepare_run(seg_spec, model)
            run_rows(workdir)
            finish_run(workdir, paths=None if staged is None else OutputPaths(labels=staged["seg"]))
            lap("seg")
    except InputError:
        layout.drop_workdir(workdir_of(spec))  # bad data: nothing worth resuming
        raise
    arrays = WorkdirLayout(pull_all(workdir))
    image = open_image(arrays.image, arrays.image_record)
    title = f"{case.name}: {model.name}"
    png = workdir_quicklook(image, arrays.labels, None, model.classes, statistics, title)
    stamps: dict[str, dict[str, int | str]]
    if staged is None:
        quicklook = named["quicklook"]
        with atomic_outputs([quicklook], ready=Workdir.open(workdir).record) as (temporary,):
            temporary.write_bytes(png)
        stamps = layout.stamp_outputs(named.values())
    else:
        staged["quicklook"].write_bytes(png)
        stamps = layout.upload_outputs({url_of(named[kind]): file for kind, file in staged.items()})
        lap("upload")
    publish_image(
        artifact_key("scan", case.name, "quicklook"),
        png,
        f"{case.name}: three slices through the mask, volumes",
    )
    return CaseResult(
        name=case.name,
        input=case.input,
        kind=case.kind,
        status="done",
        reason=reason,
        outputs={kind: shown(path) for kind, path in named.items()},
        volumes_ml=_volumes(statistics),
        timings=timings,
        device=device,
        worker=current_worker(),
        fingerprint=_recorded_fingerprint(case, Workdir.open(workdir).fingerprint),
        stamps=stamps,
    )


def _recorded_fingerprint(case: Case, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """What a case's manifest keeps of its fingerprint: without paths when pseudonymised."""
    return hide_fingerprint(fingerprint, case.input) if case.pseudonymised else fingerprint


def reused(
    output_dir: Path, case: Case, card: ModelCard, inference: InferenceOptions
) -> tuple[CaseResult | None, str]:
    """The case's result from an earlier run if its fingerprint (input, model, options) is
    unchanged; else None and why not ("" when there is no earlier result)."""
    manifest = layout.read_manifest(output_dir, case.name)
    if manifest is None:
        return None, ""
    spec = case_spec(output_dir, case, str(card.card_path), inference)
    stored = manifest.get("fingerprint") or {}
    try:
        referenced = [] if case.pseudonymised else referenced_files(stored)
        current = _recorded_fingerprint(case, run_fingerprint(spec, card, referenced))
    except (OSError, SegpipeError) as exc:
        detail = type(exc).__name__ if case.pseudonymised else str(exc)
        return None, f"cannot fingerprint the input ({detail})"
    reason = difference(stored, current)
    if reason is not None:
        return None, reason
    return CaseResult.model_validate({**manifest, "status": "reused", "reason": ""}), ""


def _refused(case: Case, error: BaseException | None) -> CaseResult:
    status = "quarantined" if isinstance(error, SegpipeError) else "failed"
    reason = (str(error) or type(error).__name__) if error is not None else "no result"
    return CaseResult(name=case.name, input=case.input, kind=case.kind, status=status, reason=reason)


@flow(name="scan-archive", validate_parameters=True)
def scan_archive(
    archive: str,
    model: str,
    output_dir: str,
    dask_address: str | None = None,
    overwrite: bool = False,
    inference: InferenceOptions | None = None,
    pseudonymize: bool = False,
    allow_remote: bool = False,
    follow_symlinks: bool = False,
) -> ArchiveReport:
    """Segment every case in ``archive``; outputs, quick-looks and ``scan-archive-report.json`` go to
    ``output_dir``, a local folder or an ``s3://bucket/prefix`` (``archive`` is a local folder).

    Cases finished by an earlier run with the same fingerprint (input, model, options) are
    reused unless ``overwrite``; the others are recomputed, with the reason in the report.
    Existing files segpipe did not write are replaced only with ``overwrite``.
    ``dask_address``: the Dask scheduler whose workers run the cases (a local cluster
    when empty). ``pseudonymize``: name cases by a keyed hash of their path (key in
    ``SEGPIPE_PSEUDONYM_KEY``); the only link back is ``output_dir/pseudonyms.csv``.
    ``follow_symlinks``: also segment top-level links that leave the archive (skipped with
    a warning otherwise). ``allow_remote``: a case's header may name data outside its
    folder (detached NRRD; docs/SECURITY.md).
    """
    with library_logs():
        logger = get_run_logger()
        started_at = dt.datetime.now(dt.UTC)
        started = time.perf_counter()
        inference = inference or InferenceOptions()
        secret = key_from_environment() if pseudonymize else None
        if is_url(archive):
            raise UsageError(
                f"archive {shown(archive)}: give a local folder (only output_dir may be in a bucket)"
            )
        root = Path(archive).expanduser().resolve()
        out = layout.output_folder(output_dir)
        if not is_url(out):
            out.mkdir(parents=True, exist_ok=True)
        card = load_card(model)
        report_path = out / REPORT
        layout.check_replaceable(out, REPORT_UNIT, [report_path], overwrite)
        runner_for_cases = task_runner(dask_address)  # a refused scheduler fails before any case
        exclude = None if is_url(out) else out
        cases, ignored = find_cases(root, exclude=exclude, key=secret, follow_symlinks=follow_symlinks)
        if secret is not None:
            others = [pseudonym(secret, name, "other") for name in ignored]
            mapping = write_mapping(
                out,
                [(c.name, c.kind, Path(c.path).name) for c in cases]
                + [(other, "ignored", name) for other, name in zip(others, ignored, strict=True)],
            )
            logger.info(
                "cases are pseudonymised (keyed hash of their path); the mapping is in %s", shown(mapping)
            )
            ignored = others
        logger.info("%s: %d case(s), %d other entries ignored", root, len(cases), len(ignored))
        key = artifact_key("scan", root.name)
        progress = RunProgress(f"{key}-progress", len(cases), f"cases of {root.name}")

        results: dict[str, CaseResult] = {}
        todo: dict[Case, str] = {}
        for case in cases:
            earlier, why = (None, "overwrite") if overwrite else reused(out, case, card, inference)
            if earlier is None:
                todo[case] = why
                if why:
                    logger.info("case %s: recomputed (%s)", case.name, why)
            else:
                results[case.name] = earlier
                progress.advance(f"{case.name} reused")
        gpu = False
        if todo:
            with runner_for_cases as runner:
                with gpu_annotation(runner.client) as gpu:
                    futures = {
                        runner.submit(
                            segment_case.with_options(task_run_name=f"case-{case.name}"),
                            parameters={
                                "case": case,
                                "card": str(card.card_path),
                                "output_dir": str(out),
                                "inference": inference,
                                "overwrite": overwrite,
                                "reason": why,
                                "allow_remote": allow_remote,
                            },
                        ): case
                        for case, why in todo.items()
                    }
                for future in as_completed(list(futures)):
                    case = futures[future]
                    future.wait()
                    if future.state.is_completed():
                        results[case.name] = future.result()
                    else:
                        error = future.result(raise_on_failure=False)
                        results[case.name] = _refused(
                            case, error if isinstance(error, BaseException) else None
                        )
                        logger.warning(
                            "case %s %s: %s", case.name, results[case.name].status, results[case.name].reason
                        )
                    progress.advance(f"{case.name} {results[case.name].status}")

        report = ArchiveReport(
            archive=str(root),
            model=card.name,
            classes=list(card.classes),
            output_dir=shown(out),
            flow_run_id=str(flow_run.id or ""),
            started=started_at.isoformat(),
            seconds=time.perf_counter() - started,
            gpu_requested=gpu,
            cases=[results[case.name] for case in cases],
            ignored=ignored,
        )
        stamps = layout.write_text(report_path, json.dumps(report.model_dump(mode="json"), indent=1))
        layout.write_manifest(out, REPORT_UNIT, {"outputs": {"report": shown(report_path)}, "stamps": stamps})
        publish_table(
            f"{key}-cases", case_rows(report), f"Every case of {root}: status, reason, outputs, volumes"
        )
        publish_markdown(
            f"{key}-report", archive_markdown(report, report_path), f"Scan archive report for {root}"
        )
        logger.info(
            "%s: %d done, %d reused, %d quarantined; outputs and %s in %s",
            root.name,
            report.count("done"),
            report.count("reused"),
            report.count("quarantined"),
            REPORT,
            shown(out),
        )
        failed = [case for case in report.cases if case.status == "failed"]
        if failed:
            names = ", ".join(case.name for case in failed)
            raise RuntimeError(
                f"{len(failed)} case(s) failed unexpectedly after retries ({names}); see {shown(report_path)}"
            )
        return report
