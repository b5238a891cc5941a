"""A real S3-compatible server on loopback for the object-storage tests: moto's, with IAM auth on.

The server runs in the test process (its WSGI app behind werkzeug on a free port), wrapped
to record every request it answers (method, path, Range header, status, body bytes
sent), so a test can count what a run cost. Authentication is switched on after the
three IAM calls that create the user, its key and its policy: a request signed with any
other key is refused, as AWS would.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import boto3
import pytest
from botocore.config import Config

REPO = Path(__file__).resolve().parents[2]
SCENE = REPO / "data" / "samples" / "Spain_7370579_S1Hand.tif"
BUCKET = "scenes"
REGION = "us-east-1"


@dataclass(frozen=True)
class Served:
    method: str
    path: str
    range: str | None
    status: int
    sent: int  # body bytes answered
    received: int  # body bytes sent to the server (Content-Length)


@dataclass
class Recorder:
    """A WSGI middleware that records each request and the body bytes either way."""

    app: Any
    log: list[Served] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    answering: int = 0  # requests whose answer is not yet logged

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        status: list[int] = [0]
        with self.lock:
            self.answering += 1

        def recording_start(code: str, headers: Any, *rest: Any) -> Any:
            status[0] = int(code.split()[0])
            return start_response(code, headers, *rest)

        sent = 0
        for chunk in self.app(environ, recording_start):
            sent += len(chunk)
            yield chunk
        with self.lock:
            self.log.append(
                Served(
                    environ["REQUEST_METHOD"],
                    environ.get("PATH_INFO", ""),
                    environ.get("HTTP_RANGE"),
                    status[0],
                    sent,
                    int(environ.get("CONTENT_LENGTH") or 0),
                )
            )
            self.answering -= 1

    def settled(self, timeout_s: float = 5.0) -> list[Served]:
        """The log once every request answered so far is in it (a client may read the last byte
        of an answer before the server gets to log it)."""
        deadline = time.monotonic() + timeout_s
        while self.answering and time.monotonic() < deadline:
            time.sleep(0.01)
        with self.lock:
            return list(self.log)

    def requests_for(self, key: str) -> list[Served]:
        return [served for served in self.settled() if served.path.endswith("/" + key)]


@dataclass(frozen=True)
class S3Server:
    """The running server: its endpoint, the bucket's name, credentials that work, the request log."""

    endpoint: str
    access_key_id: str
    secret_access_key: str
    recorder: Recorder

    def env(self, **changes: str) -> dict[str, str]:
        """The environment of a segpipe process that uses this server (``changes`` override)."""
        clean = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
        return {
            **clean,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
            "PYTHONWARNINGS": "ignore",
            **changes,
        }

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            config=Config(signature_version="s3v4"),
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )

    def keys(self, prefix: str) -> list[str]:
        # no Prefix parameter: moto checks the signature of a query holding "/" against its decoded form
        listed = self.client().list_objects_v2(Bucket=BUCKET)
        return [item["Key"] for item in listed.get("Contents", []) if item["Key"].startswith(prefix)]


def _encoded_query(create: Any) -> Any:
    """moto's ``S3IAMRequest._create_aws_request`` with the query URI-encoded again, as SigV4
    signs it: moto checks a listing's ``prefix=a%2Fb`` against its decoded ``a/b`` otherwise."""

    def create_encoded(self: Any) -> Any:
        request = create(self)
        parts = urlsplit(request.url)
        if parts.query:
            pairs = (pair.partition("=") for pair in parts.query.split("&"))
            query = "&".join(
                f"{quote(unquote(key), safe='-_.~')}={quote(unquote(value), safe='-_.~')}"
                for key, _, value in pairs
            )
            request.url = urlunsplit(parts._replace(query=query))
        return request

    return create_encoded


@contextlib.contextmanager
def running_s3_server() -> Iterator[S3Server]:
    """moto's server on 127.0.0.1 and a free port, IAM checks on, the sample scene uploaded."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.iam.access_control import S3IAMRequest
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    recorder = Recorder(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, recorder, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    admin = {"aws_access_key_id": "admin", "aws_secret_access_key": "admin", "region_name": REGION}
    # what moto's /moto-api/reset-auth does: the next three requests go unchecked, the rest are checked
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 3
    ActionAuthenticatorMixin.request_count = 0
    create = S3IAMRequest._create_aws_request
    S3IAMRequest._create_aws_request = _encoded_query(create)  # type: ignore[method-assign]
    try:
        iam = boto3.client("iam", endpoint_url=endpoint, **admin)
        iam.create_user(UserName="segpipe")
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName="segpipe", PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="segpipe")["AccessKey"]
        running = S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"], recorder)
        client = running.client()
        client.create_bucket(Bucket=BUCKET)
        client.upload_file(str(SCENE), BUCKET, "in/scene.tif")
        yield running
    finally:
        server.shutdown()
        thread.join()
        settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
        S3IAMRequest._create_aws_request = create  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """The S3 server the tests of this folder share."""
    with running_s3_server() as server:
        yield server
