from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import distributed
import pytest
from distributed import Scheduler, SpecCluster, Worker

from flows.cluster import GPU, current_worker, gpu_annotation, offers, worker_resources
from flows.flood_mapping import flood_mapping
from tests.flows import builders
from tests.helpers import threshold_card


def _cluster(workers: dict[str, dict[str, object]]) -> SpecCluster:
    """A scheduler and in-process workers on 127.0.0.1 (``resources`` as ``dask worker --resources``)."""
    return SpecCluster(
        scheduler={"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": ":0"}},
        workers={
            name: {"cls": Worker, "options": {"host": "127.0.0.1", "nthreads": 1, **options}}
            for name, options in workers.items()
        },
    )


@pytest.fixture(scope="module")
def mixed_cluster() -> Iterator[SpecCluster]:
    """Two workers; only ``gpu`` offers ``GPU=1``."""
    with _cluster({"gpu": {"resources": {GPU: 1}}, "cpu": {}}) as cluster:
        yield cluster


def _gpu_address(cluster: SpecCluster) -> str:
    return str(cluster.workers["gpu"].address)


def _restrictions(keys: list[str], dask_scheduler: Scheduler) -> list[dict[str, float] | None]:
    """The resource restrictions the scheduler holds for ``keys`` (None: unrestricted)."""
    return [dask_scheduler.tasks[key].resource_restrictions or None for key in keys]


def test_worker_resources_are_read_from_the_scheduler(mixed_cluster: SpecCluster) -> None:
    with distributed.Client(mixed_cluster) as client:
        resources = worker_resources(client)
    assert resources[_gpu_address(mixed_cluster)] == {GPU: 1}
    assert offers(resources, GPU)
    assert not offers({"tcp://x": {}}, GPU)


def test_annotated_tasks_land_only_on_the_gpu_worker(mixed_cluster: SpecCluster) -> None:
    with distributed.Client(mixed_cluster) as client:
        with gpu_annotation(client) as annotated:
            futures = [client.submit(current_worker, pure=False) for _ in range(8)]
        other = [client.submit(current_worker, pure=False) for _ in range(8)]
        assert annotated
        assert set(client.gather(futures)) == {_gpu_address(mixed_cluster)}
        assert set(client.gather(other)) <= {str(worker.address) for worker in mixed_cluster.workers.values()}
        restrictions = client.run_on_scheduler(_restrictions, [f.key for f in futures + other])
    # the scheduler's record: GPU=1 inside the context, nothing once it is left
    assert restrictions == [{GPU: 1}] * 8 + [None] * 8


def test_without_gpu_workers_tasks_are_not_annotated() -> None:
    with _cluster({"cpu": {}}) as cluster, distributed.Client(cluster) as client:
        with gpu_annotation(client) as annotated:
            future = client.submit(current_worker, pure=False)
        assert not annotated
        assert future.result(timeout=30) == str(cluster.workers["cpu"].address)


@pytest.mark.usefixtures("prefect_harness")
def test_flood_regions_run_on_the_gpu_worker_of_an_external_cluster(
    tmp_path: Path, mixed_cluster: SpecCluster
) -> None:
    scene = builders.scene(tmp_path / "in", rows=600)
    card = threshold_card(tmp_path, builders.THRESHOLD)
    result = flood_mapping(
        str(scene), str(card), str(tmp_path / "out"), regions=3, dask_address=mixed_cluster.scheduler_address
    )
    assert result.gpu_requested
    assert len(result.regions) == 3
    assert {run.worker for run in result.regions} == {_gpu_address(mixed_cluster)}
