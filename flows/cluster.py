"""Where regions and cases run: a Dask cluster behind prefect-dask's ``DaskTaskRunner``.

With an address, the run uses that scheduler (GPU workers started with
``dask worker SCHEDULER --resources GPU=1``). Without one, a small in-process
``LocalCluster`` (threads: the tasks share the flow's Prefect settings and the network
releases the GIL).

Connections to a scheduler use the security settings in Dask's configuration
(``distributed.comm.tls.*``: CA, client certificate and key; ``distributed.comm.
require-encryption``), as ``distributed.Security()`` reads them. A ``tls://`` address
without them is refused before any work, and a plain ``tcp://`` scheduler off this
machine is logged as a warning: anyone who can reach it can run code on its workers
(docs/SECURITY.md).

GPU tasks are annotated ``resources={"GPU": 1}`` only when some worker offers that
resource: the scheduler holds a task that asks for a resource no worker has forever,
which on a CPU-only cluster would hang the run instead of running it on CPU.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Iterator
from typing import Any

import dask.config
import distributed
from dask.base import annotate
from prefect_dask.task_runners import DaskTaskRunner

from pipeline.errors import UsageError

log = logging.getLogger(__name__)

GPU = "GPU"
# Two threads in one worker: regions/cases overlap their reads and writes with the
# network, and a 2-core machine is not oversubscribed by more workers.
LOCAL_CLUSTER: dict[str, Any] = {
    "n_workers": 1,
    "threads_per_worker": 2,
    "processes": False,
    "dashboard_address": ":0",
}
WORKER_WAIT_S = 60.0
TLS_CLIENT_KEYS = ("ca-file", "client.cert", "client.key")


def scheduler_security(address: str) -> distributed.Security:
    """The TLS settings from Dask's config for connecting to ``address``; refused if TLS lacks them."""
    scheme, _, rest = address.rpartition("://")
    configured = all(dask.config.get(f"distributed.comm.tls.{key}") for key in TLS_CLIENT_KEYS)
    if scheme == "tls" and not configured:
        raise UsageError(
            f"dask_address {address}: a TLS scheduler needs the CA and a client certificate in Dask's "
            "config (distributed.comm.tls.ca-file, .client.cert, .client.key; or the "
            "DASK_DISTRIBUTED__COMM__TLS__* variables)"
        )
    host = rest.rsplit(":", 1)[0].strip("[]")
    if scheme in ("", "tcp") and not _loopback(host):
        log.warning(
            "dask_address %s: unencrypted scheduler on another machine; anyone who can reach it can run "
            "code on its workers: use tls:// with certificates (docs/SECURITY.md)",
            address,
        )
    return distributed.Security()  # type: ignore[no-untyped-call]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def task_runner(address: str | None) -> DaskTaskRunner:
    """A runner on the scheduler at ``address``, or on a new local cluster when None."""
    if address:
        return DaskTaskRunner(address=address, client_kwargs={"security": scheduler_security(address)})
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=dict(LOCAL_CLUSTER))


def worker_resources(client: distributed.Client) -> dict[str, dict[str, float]]:
    """Each connected worker's declared resources (``--resources``), by address.

    Waits up to ``WORKER_WAIT_S`` for a first worker: a scheduler with none cannot say
    whether a GPU will come, and would queue every task anyway.
    """
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except TimeoutError:
        raise UsageError(
            f"the Dask scheduler has no worker after {WORKER_WAIT_S:.0f} s; "
            "start one with `dask worker ADDRESS` (add `--resources GPU=1` on GPU machines)"
        ) from None
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return {address: dict(info.get("resources") or {}) for address, info in workers.items()}


def offers(resources: dict[str, dict[str, float]], resource: str) -> bool:
    """Whether at least one worker can run a task asking for one unit of ``resource``."""
    return any(worker.get(resource, 0) >= 1 for worker in resources.values())


@contextlib.contextmanager
def gpu_annotation(client: distributed.Client) -> Iterator[bool]:
    """Inside the block, submitted tasks ask for one GPU, if any worker has one; yields whether."""
    resources = worker_resources(client)
    if not offers(resources, GPU):
        log.info("no Dask worker offers a GPU resource (%d workers); tasks run on any worker", len(resources))
        yield False
        return
    gpus = sorted(address for address, offered in resources.items() if offered.get(GPU, 0) >= 1)
    log.info("GPU tasks go to the %d worker(s) offering GPU: %s", len(gpus), ", ".join(gpus))
    with annotate(resources={GPU: 1}):
        yield True


def current_worker() -> str:
    """The Dask worker running the calling task ('' outside a Dask worker)."""
    try:
        return str(distributed.get_worker().address)
    except ValueError:
        return ""
