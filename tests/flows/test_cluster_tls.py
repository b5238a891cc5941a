"""A TLS-only Dask scheduler with mutual certificates: the flow connects with the certificates
from Dask's config; a client without them, or with a certificate from another CA, is refused."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import dask.config
import distributed
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from distributed import Scheduler, SpecCluster, Worker

from flows.cluster import task_runner
from flows.flood_mapping import flood_mapping
from pipeline.errors import UsageError
from tests.flows import builders
from tests.helpers import threshold_card

Key = ec.EllipticCurvePrivateKey


def _certificate(
    folder: Path, name: str, issuer: tuple[x509.Certificate, Key] | None
) -> tuple[x509.Certificate, Key, Path, Path]:
    """A certificate for ``name`` on 127.0.0.1, signed by ``issuer`` (a CA when None); its PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        ).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    certificate = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return certificate, key, cert_path, key_path


class Pki:
    """A CA with a certificate each for the scheduler, the worker and a client; and a stranger CA."""

    def __init__(self, folder: Path) -> None:
        ca_cert, ca_key, self.ca, _ = _certificate(folder, "ca", None)
        self.certs = {
            role: _certificate(folder, role, (ca_cert, ca_key))[2:]
            for role in ("scheduler", "worker", "client")
        }
        other = _certificate(folder, "other-ca", None)
        self.stranger = _certificate(folder, "stranger", (other[0], other[1]))[2:]

    def security(self) -> distributed.Security:
        return distributed.Security(
            tls_ca_file=str(self.ca),
            tls_scheduler_cert=str(self.certs["scheduler"][0]),
            tls_scheduler_key=str(self.certs["scheduler"][1]),
            tls_worker_cert=str(self.certs["worker"][0]),
            tls_worker_key=str(self.certs["worker"][1]),
            tls_client_cert=str(self.certs["client"][0]),
            tls_client_key=str(self.certs["client"][1]),
            require_encryption=True,
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_cluster(pki: Pki) -> Iterator[SpecCluster]:
    security = pki.security()
    with SpecCluster(
        scheduler={
            "cls": Scheduler,
            "options": {"host": "127.0.0.1", "protocol": "tls", "security": security, "dashboard": False},
        },
        workers={"w": {"cls": Worker, "options": {"host": "127.0.0.1", "nthreads": 2, "security": security}}},
        security=security,
    ) as cluster:
        yield cluster


def test_the_scheduler_speaks_tls_only(tls_cluster: SpecCluster) -> None:
    address = tls_cluster.scheduler_address
    assert address.startswith("tls://127.0.0.1:")
    with pytest.raises((OSError, TimeoutError)):
        distributed.Client(address.replace("tls://", "tcp://"), timeout="3s")


def test_a_client_without_the_cas_certificate_is_refused(pki: Pki, tls_cluster: SpecCluster) -> None:
    stranger = distributed.Security(
        tls_ca_file=str(pki.ca),
        tls_client_cert=str(pki.stranger[0]),
        tls_client_key=str(pki.stranger[1]),
        require_encryption=True,
    )
    with pytest.raises((OSError, TimeoutError)):
        distributed.Client(tls_cluster.scheduler_address, security=stranger, timeout="3s")


@pytest.mark.usefixtures("prefect_harness")
def test_a_flow_without_certificates_in_its_config_is_refused_before_work(
    tmp_path: Path, tls_cluster: SpecCluster
) -> None:
    scene = builders.scene(tmp_path / "in", rows=64, cols=64)
    card = threshold_card(tmp_path, builders.THRESHOLD)
    with pytest.raises(UsageError, match="a TLS scheduler needs the CA and a client certificate"):
        flood_mapping(
            str(scene), str(card), str(tmp_path / "out"), dask_address=tls_cluster.scheduler_address
        )
    assert not (tmp_path / "out" / "scene.tif").exists()


@pytest.mark.usefixtures("prefect_harness")
def test_flood_mapping_runs_on_a_tls_scheduler_with_certificates_from_dask_config(
    tmp_path: Path, pki: Pki, tls_cluster: SpecCluster
) -> None:
    scene = builders.scene(tmp_path / "in", rows=256, cols=64)
    card = threshold_card(tmp_path, builders.THRESHOLD)
    client = pki.certs["client"]
    config = {
        "distributed.comm.tls.ca-file": str(pki.ca),
        "distributed.comm.tls.client.cert": str(client[0]),
        "distributed.comm.tls.client.key": str(client[1]),
        "distributed.comm.require-encryption": True,
    }
    with dask.config.set(config):
        result = flood_mapping(
            str(scene),
            str(card),
            str(tmp_path / "out"),
            regions=2,
            dask_address=tls_cluster.scheduler_address,
        )
    worker = next(iter(tls_cluster.workers.values()))
    assert {run.worker for run in result.regions} == {worker.address}
    assert worker.address.startswith("tls://")
    assert Path(result.outputs["labels"]).is_file()


def test_a_tls_address_needs_certificates_in_dask_config(pki: Pki) -> None:
    needs = r"dask_address tls://127\.0\.0\.1:1: a TLS scheduler needs"
    with dask.config.set({"distributed.comm.tls.ca-file": None}), pytest.raises(UsageError, match=needs):
        task_runner("tls://127.0.0.1:1")
    client = pki.certs["client"]
    config = {
        "distributed.comm.tls.ca-file": str(pki.ca),
        "distributed.comm.tls.client.cert": str(client[0]),
        "distributed.comm.tls.client.key": str(client[1]),
    }
    with dask.config.set(config):
        runner = task_runner("tls://127.0.0.1:1")
    assert runner.client_kwargs["security"].tls_client_cert == str(client[0])


def test_an_unencrypted_remote_scheduler_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="flows.cluster"):
        task_runner("tcp://127.0.0.1:8786")
        assert not caplog.records
        task_runner("tcp://10.0.0.5:8786")
    assert "dask_address tcp://10.0.0.5:8786: unencrypted scheduler on another machine" in caplog.text
