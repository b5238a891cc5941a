"""Header fuzzing for ``segpipe segment``: seed inputs, seeded mutations, and a guarded runner.

Seeds are tiny files written here (NIfTI, gzip NIfTI, NRRD raw and gzip, tiled and
stripped GeoTIFF, a DICOM series) plus the shared real samples when present. A case
mutates header fields (dimensions, data type, voxel size, affine, offsets, tag values
and lengths), flips bytes or truncates, all from one ``random.Random(seed)``, so a
failing case is reproduced by its number.

Cases run in a long-lived worker process (a fresh interpreter that imports once, so a
case costs what the CLI does) under an address-space limit; a case that takes longer than its timeout has
the worker killed and counts as a hang. ``tests/pipeline/test_fuzz_headers.py`` runs a
few hundred cases; ``benchmarks/fuzz.py`` runs thousands and prints the counts.
"""

from __future__ import annotations

import contextlib
import ctypes
import gzip
import io
import math
import multiprocessing
import os
import random
import resource
import shutil
import struct
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import nibabel as nib
import nrrd
import numpy as np
import pydicom
import tifffile

from tests.helpers import lps_affine, shared_data, threshold_card, write_card, write_geotiff

# Python's own warning filters (``python -W`` unset), most specific last as simplefilter inserts first.
DEFAULT_WARNINGS: list[tuple[Any, type[Warning]]] = [
    ("default", Warning),
    ("ignore", ResourceWarning),
    ("ignore", ImportWarning),
    ("ignore", PendingDeprecationWarning),
    ("ignore", DeprecationWarning),
]
M_ARENA_MAX = -8  # glibc's mallopt parameter
INTS = [-1, 0, 1, 2, 3, 7, 8, 16, 64, 255, 256, 1024, 32767, -32768, 65535]
FLOATS = [0.0, -1.0, 1e-30, 1e30, math.nan, math.inf, -math.inf, 2.5, 1e6, 352.0, 2.0**31, 1e20]
NIFTI_TYPES = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304, 99]
# NIfTI-1 header fields: byte offset, struct code, number of values.
NIFTI_FIELDS: dict[str, tuple[int, str, int]] = {
    "dim": (40, "h", 8),
    "datatype": (70, "h", 1),
    "bitpix": (72, "h", 1),
    "pixdim": (76, "f", 8),
    "vox_offset": (108, "f", 1),
    "scl_slope": (112, "f", 1),
    "scl_inter": (116, "f", 1),
    "qform_code": (252, "h", 1),
    "sform_code": (254, "h", 1),
    "quatern": (256, "f", 6),
    "srow": (280, "f", 12),
}
# TIFF tags: size, sample type, compression, layout, offsets and counts, georeference.
TIFF_TAGS = [256, 257, 258, 259, 273, 277, 278, 279, 284, 322, 323, 324, 325, 339, 33550, 33922]
TIFF_VALUES = [0, 1, 2, 3, 5, 8, 16, 17, 32, 64, 255, 65535, 2**31 - 1, 2**32 - 1, 10**9]
DICOM_FIELDS: dict[str, list[Any]] = {
    "Rows": [0, 1, 7, 4096, 65535],
    "Columns": [0, 1, 6, 4096, 65535],
    "BitsAllocated": [0, 1, 8, 12, 32, 64],
    "BitsStored": [0, 1, 8, 16, 64],
    "SamplesPerPixel": [0, 3],
    "NumberOfFrames": ["0", "2", "1000000"],
    "PixelRepresentation": [1, 7],
    "PixelSpacing": [[0, 0], [math.nan, 1], [1e30, 1], [-1, -1]],
    "SliceThickness": [0, -1, 1e30],
    "RescaleSlope": [0, math.nan, 1e300],
    "ImagePositionPatient": [[0, 0, 0], [math.nan, 0, 0], [1e30, 0, 0]],
    "ImageOrientationPatient": [[0, 0, 0, 0, 0, 0], [1, 0, 0, 1, 0, 0], [math.nan] * 6],
}
NRRD_FIELDS: dict[str, list[str]] = {
    "sizes": ["0 4 4", "32767 32767 32767", "4 4", "4 4 4 4", "-1 4 4", "1 1 4294967296", "5 6 7"],
    "type": ["double", "int8", "uint16", "block", "foo"],
    "dimension": ["0", "1", "2", "4", "99"],
    "encoding": ["raw", "gzip", "bzip2", "ascii", "hex"],
    "space directions": ["(0,0,0) (0,1,0) (0,0,1)", "(nan,0,0) (0,1,0) (0,0,1)", "none (0,1,0) (0,0,1)"],
    "space": ["left-posterior-superior", "nowhere"],
    "byte skip": ["-1", "-2", "1000000000000"],
    "line skip": ["1000000000", "-3"],
    "endian": ["big", "middle"],
    "data file": ["missing.raw"],
}


@dataclass(frozen=True)
class Seed:
    """A seed input and how to segment it: a file or a DICOM folder, and the card that fits."""

    name: str
    path: Path
    card: Path
    raster: bool


@dataclass(frozen=True)
class Case:
    number: int
    seed: str
    mutation: str
    args: list[str]
    folder: Path


@dataclass
class Outcome:
    """How a case ended: ``code`` (None when the worker died or hung), stderr lines, seconds."""

    code: int | None
    lines: list[str]
    seconds: float
    hang: bool = False

    @property
    def kind(self) -> str:
        """``exit0``, ``exit2`` (one ``error:`` line, no traceback), or what else went wrong."""
        if self.hang:
            return "hang"
        if self.code is None:
            return "died"
        if any("Traceback" in line for line in self.lines):
            return "traceback"
        if self.code == 0:
            return "exit0"
        if self.code == 2 and len(self.lines) == 1 and self.lines[0].startswith("error: "):
            return "exit2"
        return f"exit{self.code}" if self.code != 2 else "exit2-not-one-line"


def make_seeds(folder: Path, real: bool = True) -> list[Seed]:
    """Tiny seeds in ``folder`` (always), and the shared real samples when ``real`` and present."""
    folder.mkdir(parents=True, exist_ok=True)
    card2d = threshold_card(folder, 0.5)
    card3d = threshold_card(folder, 0.5, dims=3)
    spaced = write_card(
        folder,
        name="threshold-3d-spaced",
        spatial_dims=3,
        patch_size=[16, 16, 16],
        inputs={"channels": ["b1"], "normalization": "none", "spacing": [1.0, 1.0, 1.0]},
    )
    rng = np.random.default_rng(0)
    volume = rng.random((10, 12, 9), dtype=np.float32)
    image = nib.Nifti1Image(volume, lps_affine())  # type: ignore[no-untyped-call]
    nib.save(image, folder / "seed.nii")
    nib.save(image, folder / "seed.nii.gz")
    header = {"space": "left-posterior-superior", "space directions": np.diag([1.0, 1.2, 2.5])}
    nrrd.write(str(folder / "seed_raw.nrrd"), volume, {**header, "encoding": "raw"})
    nrrd.write(str(folder / "seed_gz.nrrd"), volume, {**header, "encoding": "gzip"})
    write_geotiff(folder / "tiled.tif", rng.random((1, 64, 64), dtype=np.float32), descriptions=["b1"])
    stripped = (rng.random((1, 48, 40)) * 1000).astype(np.uint16)
    write_geotiff(folder / "stripped.tif", stripped, descriptions=["b1"], tiled=False)
    from tests.pipeline.test_dicom import write_series

    write_series(folder / "dicom", slices=3, rows=6, cols=7)
    seeds = [
        Seed("nifti", folder / "seed.nii", card3d, False),
        Seed("nifti-gz", folder / "seed.nii.gz", card3d, False),
        Seed("nifti-spaced", folder / "seed.nii.gz", spaced, False),
        Seed("nrrd-raw", folder / "seed_raw.nrrd", card3d, False),
        Seed("nrrd-gz", folder / "seed_gz.nrrd", spaced, False),
        Seed("geotiff-tiled", folder / "tiled.tif", card2d, True),
        Seed("geotiff-stripped", folder / "stripped.tif", card2d, True),
        Seed("dicom", folder / "dicom", card3d, False),
    ]
    data = shared_data()
    real_seeds = [
        ("real-s1", data / "geo/sen1floods11_Spain_7370579/Spain_7370579_S1Hand.tif", card2d, True),
        ("real-rgb", data / "geo/rasterio_RGB_byte/RGB.byte.tif", card2d, True),
        ("real-ct", data / "med/totalseg_ct_sm/example_ct_sm.nii.gz", card3d, False),
        ("real-dicom", data / "med/dicom2nifti_series/siemens_sagittal_mr/dicom", card3d, False),
    ]
    for name, path, card, raster in real_seeds if real else []:
        if path.exists():
            seeds.append(Seed(name, path, card, raster))
    return seeds


def _pack(content: bytearray, offset: int, code: str, value: float, endian: str = "<") -> None:
    if code in "hH":
        value = int(value) if math.isfinite(value) else 0
        value = max(-32768, min(32767, value)) if code == "h" else value % 65536
    elif code in "iIqQ":
        value = int(value) if math.isfinite(value) else 0
        bits = struct.calcsize(code) * 8
        low, high = (0, (1 << bits) - 1) if code.isupper() else (-(1 << bits - 1), (1 << bits - 1) - 1)
        value = max(low, min(high, value))
    struct.pack_into(endian + code, content, offset, value)


def _flip_bytes(rng: random.Random, content: bytearray, span: int | None = None) -> str:
    count = rng.choice([1, 2, 4, 16])
    end = min(len(content), span or len(content))
    for _ in range(count):
        content[rng.randrange(end)] = rng.randrange(256)
    return f"flip {count} bytes in the first {end}"


def _truncate(rng: random.Random, content: bytearray) -> str:
    keep = rng.randrange(len(content))
    del content[keep:]
    return f"truncate to {keep} bytes"


def mutate_nifti_header(rng: random.Random, content: bytearray) -> str:
    """Set 1-3 header fields (``dim``, ``datatype``, ``pixdim``, ``vox_offset``, ...) to odd values."""
    changes = []
    for _ in range(rng.randint(1, 3)):
        name = rng.choice(list(NIFTI_FIELDS))
        offset, code, count = NIFTI_FIELDS[name]
        index = rng.randrange(count)
        if name == "datatype":
            value: float = rng.choice(NIFTI_TYPES)
        elif code == "h":
            value = rng.choice(INTS)
        else:
            value = rng.choice(FLOATS)
        _pack(content, offset + index * struct.calcsize(code), code, value)
        changes.append(f"{name}[{index}]={value}")
    return "nifti " + ", ".join(changes)


def mutate_nifti(rng: random.Random, source: Path, target: Path) -> str:
    packed = source.name.endswith(".gz")
    content = bytearray(gzip.decompress(source.read_bytes()) if packed else source.read_bytes())
    roll = rng.random()
    if roll < 0.6:
        what = mutate_nifti_header(rng, content)
    elif roll < 0.75:
        what = _flip_bytes(rng, content, 348 if rng.random() < 0.7 else None)
    elif roll < 0.85 or not packed:
        what = _truncate(rng, content)
    else:
        stream = bytearray(gzip.compress(bytes(content)))
        what = "gzip stream " + (_truncate(rng, stream) if rng.random() < 0.5 else _flip_bytes(rng, stream))
        target.write_bytes(bytes(stream))
        return what
    target.write_bytes(gzip.compress(bytes(content)) if packed else bytes(content))
    return what


def mutate_nrrd(rng: random.Random, source: Path, target: Path) -> str:
    content = source.read_bytes()
    head, _, data = content.partition(b"\n\n")
    lines = head.decode().split("\n")
    roll = rng.random()
    if roll < 0.7:
        name = rng.choice(list(NRRD_FIELDS))
        value = rng.choice(NRRD_FIELDS[name])
        lines = [line for line in lines if not line.startswith(f"{name}:")] + [f"{name}: {value}"]
        target.write_bytes("\n".join(lines).encode() + b"\n\n" + data)
        return f"nrrd {name}: {value}"
    mutable = bytearray(content)
    what = _flip_bytes(rng, mutable) if roll < 0.85 else _truncate(rng, mutable)
    target.write_bytes(bytes(mutable))
    return f"nrrd {what}"


def mutate_tiff(rng: random.Random, source: Path, target: Path) -> str:
    """Overwrite one value of a size, layout, offset, count or georeference tag (or flip/truncate)."""
    content = bytearray(source.read_bytes())
    roll = rng.random()
    if roll < 0.7:
        with tifffile.TiffFile(io.BytesIO(bytes(content))) as tiff:
            page = tiff.pages[0]
            endian = tiff.byteorder
            tags = [tag for tag in page.tags if tag.code in TIFF_TAGS]  # type: ignore[union-attr]
            tag = rng.choice(tags)
            code, offset, count, datatype = tag.code, tag.valueoffset, tag.count, int(tag.dtype)
        fmt = {3: "H", 4: "I", 16: "Q", 12: "d", 8: "h", 9: "i", 11: "f"}.get(datatype, "B")
        index = rng.randrange(count)
        value: float = rng.choice(FLOATS) if fmt in "df" else rng.choice(TIFF_VALUES)
        _pack(content, offset + index * struct.calcsize(fmt), fmt, value, endian)
        what = f"tiff tag {code}[{index}]={value}"
    elif roll < 0.85:
        what = "tiff " + _flip_bytes(rng, content)
    else:
        what = "tiff " + _truncate(rng, content)
    target.write_bytes(bytes(content))
    return what


def mutate_dicom(rng: random.Random, source: Path, target: Path) -> str:
    """Copy the series and change one of its files: a header field, its pixel data, or its bytes."""
    shutil.copytree(source, target)
    files = sorted(path for path in target.rglob("*") if path.is_file())
    victim = rng.choice(files)
    roll = rng.random()
    if roll < 0.6:
        ds = pydicom.dcmread(victim)
        name = rng.choice(list(DICOM_FIELDS))
        value = rng.choice(DICOM_FIELDS[name])
        setattr(ds, name, value)
        ds.save_as(victim, enforce_file_format=False)
        return f"dicom {victim.name} {name}={value}"
    if roll < 0.75:
        ds = pydicom.dcmread(victim)
        keep = rng.randrange(len(ds.PixelData) + 1)
        ds.PixelData = ds.PixelData[:keep] + (b"\0" if keep % 2 else b"")
        ds.save_as(victim, enforce_file_format=False)
        return f"dicom {victim.name} pixel data cut to {keep} bytes"
    content = bytearray(victim.read_bytes())
    what = _flip_bytes(rng, content) if roll < 0.9 else _truncate(rng, content)
    victim.write_bytes(bytes(content))
    return f"dicom {victim.name} {what}"


def mutate(rng: random.Random, seed: Seed, folder: Path) -> tuple[Path, str]:
    """A mutated copy of ``seed`` in ``folder`` and what was changed."""
    name = seed.path.name
    if seed.path.is_dir():
        target = folder / "series"
        return target, mutate_dicom(rng, seed.path, target)
    target = folder / name
    if name.endswith((".nii", ".nii.gz")):
        return target, mutate_nifti(rng, seed.path, target)
    if name.endswith(".nrrd"):
        return target, mutate_nrrd(rng, seed.path, target)
    return target, mutate_tiff(rng, seed.path, target)


def cases(seeds: list[Seed], count: int, seed: int, folder: Path) -> Iterator[Case]:
    """``count`` cases, round-robin over the seeds, each mutated with ``random.Random(seed + n)``."""
    for number in range(count):
        rng = random.Random(seed * 1_000_003 + number)
        base = seeds[number % len(seeds)]
        case_folder = folder / f"case{number:05d}"
        case_folder.mkdir(parents=True)
        path, what = mutate(rng, base, case_folder)
        output = case_folder / ("out.tif" if base.raster else "out.nii.gz")
        args = ["segment", str(path), "-m", str(base.card), "-o", str(output), "--device", "cpu", "-q"]
        if base.raster:
            args += ["--bands", "1"]
        yield Case(number, base.name, what, args, case_folder)


def _worker(connection: Connection, memory_mb: int) -> None:
    """Run CLI argument lists sent over ``connection``; answer (code, stderr lines, peak RSS in MB)."""
    from pipeline.cli import main

    _like_a_fresh_process()
    if memory_mb:
        limit = _address_space() + memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    torch_threads()
    while True:
        args = connection.recv()
        if args is None:
            return
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(args)
            except BaseException as exc:  # a fuzz case must report, never kill the worker
                stderr.write(f"Traceback (escaped main): {type(exc).__name__}: {exc}\n")
                code = 1
        lines = [line for line in stderr.getvalue().splitlines() if line.strip()]
        connection.send((code, lines, peak_rss_mb()))


def _like_a_fresh_process() -> None:
    """Make the worker count what a CLI process would.

    Python's default warning filters: a worker must not take pytest's ``error``
    filter, which turns a library's warning (pydicom's on a bad VR value, rasterio's on a
    missing geotransform) into exit 1. At most two malloc arenas: glibc reserves 64 MiB
    of address space for each thread's arena, which the address-space limit would charge
    to the cases as the engine's, zarr's and dask's thread pools start (about 0.6 GB for
    a dozen threads, with only 0.3 GB of it resident).
    """
    warnings.resetwarnings()
    for action, category in DEFAULT_WARNINGS:
        warnings.simplefilter(action, category)
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, 2)


def torch_threads() -> None:
    import torch

    torch.set_num_threads(1)


def _address_space() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_mb() -> float:
    """This process's own peak resident set, in MB.

    ``VmHWM``, not ``getrusage``: Linux carries ``ru_maxrss`` across fork and exec, so a
    spawned worker would report the peak of the (large) test process that started it.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Runner:
    """One worker process at a time, restarted after a hang or death; peak RSS over all workers."""

    memory_mb: int = 2048
    timeout_s: float = 60.0
    peak_rss_mb: float = 0.0
    _process: Any = None
    _connection: Connection | None = None
    log: list[str] = field(default_factory=list)

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _start(self) -> Connection:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no locks inherited from threads
        parent, child = context.Pipe()
        self._process = context.Process(target=_worker, args=(child, self.memory_mb), daemon=True)
        self._process.start()
        child.close()
        self._connection = parent
        return parent

    def _stop(self) -> None:
        if self._process is not None:
            if self._connection is not None:
                with contextlib.suppress(OSError, BrokenPipeError):
                    self._connection.send(None)
            self._process.join(5)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        self._process = None
        self._connection = None

    def run(self, args: list[str]) -> Outcome:
        connection = self._connection or self._start()
        started = time.perf_counter()
        connection.send(args)
        if not connection.poll(self.timeout_s):
            self._process.kill()
            self._process.join()
            self._process, self._connection = None, None
            return Outcome(None, [], time.perf_counter() - started, hang=True)
        try:
            code, lines, rss = connection.recv()
        except EOFError:  # the worker died (killed for memory, or a crash in C)
            self._process.join()
            self._process, self._connection = None, None
            return Outcome(None, [], time.perf_counter() - started)
        self.peak_rss_mb = max(self.peak_rss_mb, rss)
        return Outcome(code, lines, time.perf_counter() - started)


def run_cases(
    seeds: list[Seed],
    count: int,
    seed: int,
    folder: Path,
    runner: Runner,
    report: Callable[[Case, Outcome], None] | None = None,
) -> dict[str, Any]:
    """Run ``count`` cases; return the counts by kind, the slowest case and the peak RSS."""
    counts: dict[str, int] = {}
    slowest = 0.0
    for case in cases(seeds, count, seed, folder):
        outcome = runner.run(case.args)
        counts[outcome.kind] = counts.get(outcome.kind, 0) + 1
        slowest = max(slowest, outcome.seconds)
        if report is not None:
            report(case, outcome)
        shutil.rmtree(case.folder, ignore_errors=True)
    exit0, exit2 = counts.get("exit0", 0), counts.get("exit2", 0)
    return {
        "cases": count,
        "exit0": exit0,
        "exit2": exit2,
        "other": count - exit0 - exit2,
        "other_kinds": {k: v for k, v in counts.items() if k not in ("exit0", "exit2")},
        "peak_rss_mb": round(runner.peak_rss_mb, 1),
        "slowest_s": round(slowest, 2),
    }
