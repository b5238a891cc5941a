"""The ``flood-inbox`` flow: start a ``flood-mapping`` run for every new scene in an inbox.

Run on a schedule (prefect.yaml: every 15 minutes, on the ``cpu`` pool). A scene is
skipped when it is done (its done manifest and every output it lists exist,
``flows.layout``, and its fingerprint, input, model and options, is unchanged: new
weights under the same card path make it due again, with the reason in the table),
when a ``flood-mapping`` run for it is still scheduled or running (runs carry the tag
``scene:NAME``), or while its file changed less than ``min_age_s`` ago (a copy may be
in progress). Anything else starts a run: as a run of
the ``flood-mapping`` deployment when it exists (a GPU worker picks it up; this flow
does not wait), else as a subflow here. A scene that failed before is simply started
again and resumes from its workdir under ``output_dir``.

With ``pair_pre_event``, each scene runs with the newest earlier scene of the same footprint
as its pre-event scene (``flows.pairing``): the pairing is part of the run's fingerprint,
so a scene paired differently than its finished run is due again, and a scene waits while
its pre-event scene's file is still changing.

``inbox`` and ``output_dir`` may be ``s3://`` prefixes. A bucket inbox is polled, not
watched: each run lists the prefix once (``flows.scenes.bucket_scenes``) and reads its STAC
Items; runs get each scene and the pre-event scene as URLs and ``output_dir`` as its URL,
and the done check reads the manifests in the bucket.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from prefect import flow, get_run_logger, tags
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from flows import layout
from flows.flood_mapping import flood_mapping, scene_spec
from flows.logs import library_logs
from flows.names import artifact_key
from flows.pairing import Pairing, PairingRules, pair_scenes
from flows.reports import inbox_rows, publish_table
from flows.results import InboxEntry
from flows.scenes import Scene, bucket_scenes, find_scenes, settled
from pipeline.errors import SegpipeError
from pipeline.run.fingerprint import difference, referenced_files
from pipeline.run.plan import run_fingerprint
from pipeline.run.spec import FloodReference, InferenceOptions, PolygonSettings
from pipeline.storage import is_url, path_of, url_of
from unet.card import load_card

DEPLOYMENT = "flood-mapping/flood-mapping"
IN_FLIGHT = [
    StateType.SCHEDULED,
    StateType.PENDING,
    StateType.RUNNING,
    StateType.PAUSED,
    StateType.CANCELLING,
]


def scene_tag(name: str) -> str:
    return f"scene:{name}"


def in_flight(name: str) -> str:
    """The id of a ``flood-mapping`` run for the scene that has not finished yet ('' if none)."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["flood-mapping"])),
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[scene_tag(name)]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=IN_FLIGHT)),
            ),
            limit=1,
        )
    return str(runs[0].id) if runs else ""


def deployment_exists(name: str) -> bool:
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(name)
        except ObjectNotFound:
            return False
    return True


@flow(name="flood-inbox", validate_parameters=True)
def flood_inbox(
    inbox: str,
    model: str,
    output_dir: str,
    regions: int = 2,
    dask_address: str | None = None,
    min_age_s: float = 60.0,
    dispatch: Literal["auto", "deployment", "subflow"] = "auto",
    deployment: str = DEPLOYMENT,
    inference: InferenceOptions | None = None,
    polygons: PolygonSettings | None = None,
    allow_remote: bool = False,
    follow_symlinks: bool = False,
    pair_pre_event: bool = False,
    pairing: PairingRules | None = None,
) -> list[InboxEntry]:
    """Start ``flood-mapping`` for each scene of ``inbox`` (a folder, a STAC ``catalog.json``, or
    an ``s3://bucket/prefix/``) that has no finished output in ``output_dir`` (a folder or an
    ``s3://`` prefix) yet.

    ``dispatch``: ``deployment`` runs go to the deployment ``deployment`` (GPU pool),
    ``subflow`` runs them here one after the other, ``auto`` picks the deployment if it
    exists. ``follow_symlinks``: also take inbox entries that are links leaving the inbox
    (skipped with a warning otherwise); ``allow_remote`` goes to each scene's run.
    ``pair_pre_event``: each scene's run gets, as ``pre_event``, the newest earlier scene of
    the inbox with the same footprint by ``pairing`` (docs/flows.md); the table names it.
    """
    with library_logs():
        logger = get_run_logger()
        out = layout.output_folder(output_dir)
        if is_url(inbox):
            scenes = bucket_scenes(url_of(inbox))
        else:
            scenes = find_scenes(Path(inbox).expanduser().resolve(), follow_symlinks, allow_remote)
        use_deployment = dispatch == "deployment" or (dispatch == "auto" and deployment_exists(deployment))
        logger.info(
            "%d scene(s) in %s; new ones go to %s",
            len(scenes),
            inbox,
            f"deployment {deployment}" if use_deployment else "subflows",
        )
        dispatcher = _Dispatcher(
            out=out,
            deployment=deployment if use_deployment else None,
            model=model,
            regions=regions,
            dask_address=dask_address,
            inference=inference or InferenceOptions(),
            polygons=polygons or PolygonSettings(),
            allow_remote=allow_remote,
        )
        pairings = pair_scenes(scenes, pairing or PairingRules()) if pair_pre_event else {}
        entries: list[InboxEntry] = []
        for scene in scenes:
            entries.append(dispatcher.handle(scene, min_age_s, pairings.get(scene.name)))
            logger.info("%s: %s %s", scene.name, entries[-1].status, entries[-1].detail)
        publish_table(
            artifact_key("inbox", Path(inbox).name), inbox_rows(entries), f"Scenes of {inbox} in this run"
        )
        return entries


@dataclass(frozen=True)
class _Dispatcher:
    """Decides about one scene and starts its run (deployment run or subflow)."""

    out: Path
    deployment: str | None
    model: str
    regions: int
    dask_address: str | None
    inference: InferenceOptions
    polygons: PolygonSettings
    allow_remote: bool

    def redo_reason(self, scene: Scene, pre_event: str | None = None) -> str | None:
        """None when the scene's finished result may stand; why not otherwise ("" when it has none).
        ``pre_event``: the run's pre-event scene, fingerprinted as the flow's run records it."""
        manifest = layout.read_manifest(self.out, scene.name)
        if manifest is None:
            return ""
        spec = scene_spec(
            scene.inputs, self.model, self.out, scene.name, self.inference, self.polygons, probabilities=False
        )
        reference = FloodReference(pre_event=None if pre_event is None else path_of(pre_event))
        spec = spec.model_copy(update={"reference": reference})
        stored = manifest.get("fingerprint") or {}
        try:
            card = load_card(self.model)
            current = run_fingerprint(spec, card, referenced_files(stored))
        except (OSError, SegpipeError) as exc:
            return f"cannot fingerprint ({exc})"
        if stored and _pre_event_of(stored) != _pre_event_of(current):
            return "pre-event scene changed"
        return difference(stored, current)

    def handle(self, scene: Scene, min_age_s: float, pairing: Pairing | None = None) -> InboxEntry:
        """Decide about ``scene`` and start its run when due; ``pairing``: its pre-event scene."""
        inputs = [_given(path) for path in scene.inputs]
        pre = None if pairing is None else pairing.pre_event
        pre_event = None if pre is None else _given(pre.inputs[0])
        entry = InboxEntry(
            name=scene.name, inputs=inputs, status="done", pre_event="" if pairing is None else pairing.note
        )
        reason = self.redo_reason(scene, pre_event)
        if reason is None:
            return entry.model_copy(update={"detail": "outputs exist"})
        if reason:
            entry = entry.model_copy(update={"detail": reason})
        running = in_flight(scene.name)
        if running:
            return entry.model_copy(update={"status": "running", "flow_run_id": running})
        if not settled(scene, min_age_s):
            return entry.model_copy(
                update={"status": "waiting", "detail": f"changed < {min_age_s:.0f} s ago"}
            )
        if pre is not None and not settled(pre, min_age_s):
            return entry.model_copy(
                update={"status": "waiting", "detail": f"pre-event scene changed < {min_age_s:.0f} s ago"}
            )
        scene_parameter: str | list[str] = inputs[0] if len(inputs) == 1 else inputs
        if self.deployment is not None:
            run = cast(
                FlowRun,
                run_deployment(
                    self.deployment,
                    parameters={
                        "scene": scene_parameter,
                        "model": self.model,
                        "output_dir": _given(self.out),
                        "regions": self.regions,
                        "dask_address": self.dask_address,
                        "inference": self.inference.model_dump(mode="json"),
                        "polygons": self.polygons.model_dump(mode="json"),
                        "allow_remote": self.allow_remote,
                        **({"pre_event": pre_event} if pre_event is not None else {}),
                    },
                    timeout=0,
                    tags=[scene_tag(scene.name)],
                ),
            )
            return entry.model_copy(
                update={
                    "status": "started",
                    "detail": "; ".join(filter(None, [entry.detail, self.deployment])),
                    "flow_run_id": str(run.id),
                }
            )
        with tags(scene_tag(scene.name)):
            state = flood_mapping(
                scene_parameter,
                self.model,
                _given(self.out),
                regions=self.regions,
                dask_address=self.dask_address,
                inference=self.inference,
                polygons=self.polygons,
                allow_remote=self.allow_remote,
                pre_event=pre_event,
                return_state=True,
            )
        run_id = str(state.state_details.flow_run_id or "")
        if state.is_completed():
            return entry.model_copy(update={"status": "processed", "flow_run_id": run_id})
        return entry.model_copy(
            update={"status": "failed", "detail": state.message or state.name or "", "flow_run_id": run_id}
        )


def _given(path: Path) -> str:
    """A path as a run's parameter takes it: a bucket's by its URL, not its GDAL path."""
    return url_of(path) if is_url(path) else str(path)


def _pre_event_of(fingerprint: dict[str, Any]) -> Any:
    """The pre-event scene a fingerprint's options record (None without one)."""
    options = fingerprint.get("options")
    reference = options.get("reference") if isinstance(options, dict) else None
    return reference.get("pre_event") if isinstance(reference, dict) else None
