"""Patient data and hostile names through a whole scan-archive run.

"Every output byte": every file under ``output_dir`` after the run, gzip files also
decompressed. Workdirs are removed once a case is done or refused for bad input, so no
zarr chunk remains to search; PNG quick-looks hold pixels only and are searched as
stored. The mapping file is the one place that links IDs to names. DICOM SEG copies the
source's patient and study modules by design (DICOM requires them), so the tag markers
are not looked for in ``.seg.dcm`` files; the name markers are.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import stat
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from flows.pseudonyms import KEY_VARIABLE, MAPPING, write_mapping
from flows.results import ArchiveReport
from flows.scan_archive import scan_archive
from pipeline.errors import OutputError
from tests.flows import api, builders
from tests.helpers import threshold_card
from tests.pipeline.test_dicom import write_series
from tests.pipeline.test_gzip_members import assert_anonymous_gzip

KEY = "0123456789abcdef" * 4
NAME_MARKERS = {
    "nifti file": "ZQXNIFTIDOE",
    "dicom folder": "ZQXFOLDERROE",
    "dicom file": "ZQXSLICEFILE",
    "broken file": "ZQXBROKENMRN",
    "ignored file": "ZQXNOTACASE",
}
TAG_MARKERS = {
    "PatientName": "ZQXPATNAME^JANE",
    "PatientID": "ZQXPATID4711",
    "InstitutionName": "ZQXINSTITUTE",
    "AccessionNumber": "ZQXACC0815",
}
SERIES_DESCRIPTION = "ZQXSERIESDESC"


class Collect(logging.Handler):
    """Every record reaching the root logger, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def marked_archive(root: Path) -> Path:
    """A NIfTI case, a DICOM series and a broken case named by markers, tags set to markers."""
    root.mkdir(parents=True)
    builders.volume(root / f"{NAME_MARKERS['nifti file']}.nii.gz", seed=1)
    folder = root / f"{NAME_MARKERS['dicom folder']} (MR)"
    written = write_series(folder, modality="MR", slices=6, rows=20, cols=18, seed=3)
    for index, path in enumerate(written.paths):
        ds = pydicom.dcmread(path)
        for keyword, value in TAG_MARKERS.items():
            setattr(ds, keyword, value)
        ds.SeriesDescription = SERIES_DESCRIPTION
        ds.save_as(path.with_name(f"{NAME_MARKERS['dicom file']}-{index}.dcm"), enforce_file_format=True)
        path.unlink()
    (root / f"{NAME_MARKERS['broken file']}.nii.gz").write_text("not a NIfTI file\n")
    (root / f"{NAME_MARKERS['ignored file']}.txt").write_text("notes\n")
    return root


@dataclass
class Run:
    out: Path
    texts: dict[str, str]  # where -> everything it holds, as text
    report: ArchiveReport


def _output_texts(out: Path) -> dict[str, str]:
    texts = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != MAPPING):
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data += gzip.decompress(data)
        texts[f"output {path.relative_to(out)}"] = data.decode("latin-1")
    return texts


@pytest.fixture(scope="module")
def pseudonymised_run(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> Run:
    tmp = tmp_path_factory.mktemp("privacy")
    archive = marked_archive(tmp / "archive")
    card = threshold_card(tmp, builders.THRESHOLD, dims=3)
    out = tmp / "out"
    collect = Collect()
    logging.getLogger().addHandler(collect)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(KEY_VARIABLE, KEY)
            state = scan_archive(str(archive), str(card), str(out), pseudonymize=True, return_state=True)
    finally:
        logging.getLogger().removeHandler(collect)
    assert state.is_completed(), state.message
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    texts = _output_texts(out)
    texts["captured logs"] = "\n".join(collect.lines)
    texts["run logs"] = "\n".join(f"{log.name} {log.message}" for log in api.logs(run_id))
    texts["artifacts"] = "\n".join(
        f"{a.key} {a.type} {a.description} {json.dumps(a.data)}" for a in api.artifacts(run_id)
    )
    texts["task runs"] = "\n".join(
        f"{t.name} {t.state_name} {t.state.message if t.state else ''}" for t in api.task_runs(run_id)
    )
    texts["flow run state"] = str(state.message)
    return Run(out=out, texts=texts, report=state.result())


def _found(texts: dict[str, str], markers: list[str], skip_seg: bool = False) -> list[tuple[str, str]]:
    return [
        (where, marker)
        for where, text in texts.items()
        if not (skip_seg and where.endswith(".seg.dcm"))
        for marker in markers
        if marker in text
    ]


def test_no_name_or_tag_marker_outside_the_mapping(pseudonymised_run: Run) -> None:
    texts = pseudonymised_run.texts
    found = _found(texts, list(NAME_MARKERS.values())) + _found(
        texts, list(TAG_MARKERS.values()), skip_seg=True
    )
    assert not found, found
    segs = [where for where in texts if where.endswith(".seg.dcm")]
    assert len(segs) == 1
    assert TAG_MARKERS["PatientID"] in texts[segs[0]]  # SEG keeps the patient module, as documented
    assert texts["run logs"]  # the search saw the run's logs...
    assert "case-" in texts["artifacts"]  # ...and its artifacts, named by ID


def test_no_series_description_outside_the_seg(pseudonymised_run: Run) -> None:
    assert _found(pseudonymised_run.texts, [SERIES_DESCRIPTION], skip_seg=True) == []


def test_cases_are_named_by_id_and_the_mapping_links_them_back(pseudonymised_run: Run) -> None:
    out = pseudonymised_run.out
    report = pseudonymised_run.report
    statuses = sorted(case.status for case in report.cases)
    assert statuses == ["done", "done", "quarantined"]
    names = [case.name for case in report.cases]
    assert all(name.startswith("case-") and len(name) == 21 for name in names)
    broken = next(c for c in report.cases if c.status == "quarantined")
    assert broken.reason.startswith(f"{broken.name}: not a readable NIfTI file")
    mapping = out / MAPPING
    assert stat.S_IMODE(mapping.stat().st_mode) == 0o600
    with mapping.open(encoding="utf-8", newline="") as handle:
        rows = {row["id"]: row for row in csv.DictReader(handle)}
    assert set(names) < set(rows)
    sources = {row["source"] for row in rows.values()}
    assert f"{NAME_MARKERS['nifti file']}.nii.gz" in sources
    assert f"{NAME_MARKERS['ignored file']}.txt" in sources
    for mask in out.glob("*.nii.gz"):
        assert_anonymous_gzip(mask)


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("key", [None, "short"])
def test_pseudonymize_without_a_proper_key_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str | None
) -> None:
    if key is None:
        monkeypatch.delenv(KEY_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(KEY_VARIABLE, key)
    archive = marked_archive(tmp_path / "archive")
    state = scan_archive(
        str(archive), "random-unet-3d", str(tmp_path / "out"), pseudonymize=True, return_state=True
    )
    assert state.is_failed()
    assert KEY_VARIABLE in str(state.message)
    assert not (tmp_path / "out").exists()


HOSTILE = "Doe\nINFO flows.scan_archive: forged | `x` <script>alert(1)<\\script> \u202egpj"


@pytest.mark.usefixtures("prefect_harness")
def test_hostile_names_cannot_forge_run_logs_or_reports(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    builders.volume(archive / f"{HOSTILE}.nii.gz", seed=1)
    (archive / f"{HOSTILE} broken.nii.gz").write_text("not a NIfTI file\n")
    card = threshold_card(tmp_path, builders.THRESHOLD, dims=3)

    state = scan_archive(str(archive), str(card), str(tmp_path / "out"), return_state=True)

    assert state.is_completed(), state.message
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    messages = [log.message for log in api.logs(run_id)]
    assert any("Doe\\nINFO" in message for message in messages)  # the names reached the logs, escaped
    for message in messages:
        assert "\u202e" not in message
        assert not [
            line for line in message.splitlines() if line.startswith("INFO flows.scan_archive: forged")
        ]
    report = next(a for a in api.artifacts(run_id) if a.type == "markdown")
    markdown = str(report.data)
    assert "<script" not in markdown
    assert "\u202e" not in markdown
    assert "&lt;script&gt;" in markdown
    assert not [line for line in markdown.splitlines() if line.startswith("INFO flows")]


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"patient,file\nDoe,a.nii.gz\n", r"columns \['patient', 'file'\]"), (b"\xff\xfe", "not UTF-8")],
)
def test_a_mapping_file_segpipe_did_not_write_is_refused_and_left_as_it_is(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    foreign = tmp_path / MAPPING
    foreign.write_bytes(content)
    with pytest.raises(OutputError, match=rf"{MAPPING}: not a segpipe pseudonym mapping \(.*{problem}"):
        write_mapping(tmp_path, [("case-1", "nifti", "Doe.nii.gz")])
    assert foreign.read_bytes() == content
