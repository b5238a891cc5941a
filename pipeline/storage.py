"""Object storage: what a URL is, where its credentials come from, and the few calls a run makes.

An input or output named ``s3://bucket/key``, ``https://...`` or ``http://...`` lives in
object storage; anything else is a local path. Credentials and endpoint come from the
places AWS users already set (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL``, ``AWS_REGION`` or ``AWS_DEFAULT_REGION``,
``AWS_PROFILE``), read once into ``S3Config`` and handed to both libraries that touch the
data, so they cannot disagree: GDAL (``gdal_options``, for rasterio's ``Env``: rasters are
read in place through ``/vsis3/`` and ``/vsicurl/`` with range requests) and obstore
(``S3Config.store``: heads, fetches and uploads). Secrets never leave ``S3Config``: its
repr hides them and every message names a URL by ``redact`` (no query, no user info: a
presigned URL's signature is a credential too).

Inside the pipeline a remote raster travels as its GDAL path (``gdal_path``), a ``Path``
that keeps the URL (``url_of`` gives it back).
"""

from __future__ import annotations

import io
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig

from pipeline.errors import InputError, NotFoundError, OutputError, SegpipeError, UsageError

log = logging.getLogger(__name__)
SCHEMES = ("s3", "http", "https")
VSIS3 = "/vsis3/"
VSICURL = "/vsicurl?url="
TIMEOUT_S = 30
READ_BLOCK = 1 << 16  # header reads: a TIFF's IFDs, a NIfTI header


def is_url(name: str | Path) -> bool:
    """Whether ``name`` is an object-storage URL (``s3://``, ``http://``, ``https://``) or its GDAL path."""
    text = str(name)
    if text.startswith((VSIS3, VSICURL)):
        return True
    return urlsplit(text).scheme.lower() in SCHEMES and "://" in text


def redact(url: str) -> str:
    """``url`` fit for a message: without user info and query (a presigned URL's signature)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def url_of(name: str | Path) -> str:
    """The URL a GDAL path (or a URL) names."""
    text = str(name)
    if text.startswith(VSIS3):
        return "s3://" + text.removeprefix(VSIS3)
    if text.startswith(VSICURL):
        return unquote(text.removeprefix(VSICURL))
    return text


def shown(name: str | Path) -> str:
    """How a message names an input or output: a URL redacted, a path as it is."""
    return redact(url_of(name)) if is_url(name) else str(name)


def path_of(name: str) -> Path:
    """A file or object name as the library holds it: a URL as its GDAL path, else the path."""
    return gdal_path(name) if is_url(name) else Path(name)


def gdal_path(url: str) -> Path:
    """The path GDAL reads ``url`` through, as a ``Path`` that keeps it (no ``//`` to collapse)."""
    parts = urlsplit(url)
    if parts.scheme == "s3":
        bucket, key = bucket_key(url)
        return Path(f"{VSIS3}{bucket}/{key}")
    return Path(VSICURL + quote(url, safe=""))


def bucket_key(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    key = parts.path.lstrip("/")
    if parts.scheme != "s3" or not parts.netloc or not key or "//" in key:
        raise UsageError(f"{redact(url)}: not an object URL (s3://bucket/key)")
    return parts.netloc, key


@dataclass(frozen=True)
class S3Config:
    """Credentials, endpoint and region for S3, from the environment (``from_environment``)."""

    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    endpoint: str | None = None  # scheme://host[:port], None for AWS itself
    region: str = "us-east-1"
    profile: str | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> S3Config:
        """The standard ``AWS_*`` variables; a profile's keys (``AWS_PROFILE``) via boto3's resolver
        when the variables give none."""
        env = os.environ if environ is None else environ
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
        keys = (env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY"), env.get("AWS_SESSION_TOKEN"))
        profile = env.get("AWS_PROFILE")
        if keys[0] is None and profile:
            keys = _profile_keys(profile)
        return cls(*keys, endpoint=env.get("AWS_ENDPOINT_URL") or None, region=region, profile=profile)

    def gdal_options(self) -> dict[str, str]:
        """The same settings as GDAL configuration options (rasterio ``Env`` keywords)."""
        options = {"AWS_REGION": self.region}
        if self.access_key_id and self.secret_access_key:
            options["AWS_ACCESS_KEY_ID"] = self.access_key_id
            options["AWS_SECRET_ACCESS_KEY"] = self.secret_access_key
            if self.session_token:
                options["AWS_SESSION_TOKEN"] = self.session_token
        elif self.profile is None:
            options["AWS_NO_SIGN_REQUEST"] = "YES"  # public buckets, as the object client reads them
        if self.endpoint:
            parts = urlsplit(self.endpoint)
            options["AWS_S3_ENDPOINT"] = parts.netloc
            options["AWS_HTTPS"] = "NO" if parts.scheme == "http" else "YES"
            options["AWS_VIRTUAL_HOSTING"] = "FALSE"  # a custom endpoint serves path-style URLs
        return options

    def store(self, bucket: str) -> Any:
        """An obstore ``S3Store`` on ``bucket`` with these settings (nothing else from the environment)."""
        from obstore.store import S3Store

        config: dict[str, Any] = {"region": self.region}
        if self.access_key_id and self.secret_access_key:
            config |= {"access_key_id": self.access_key_id, "secret_access_key": self.secret_access_key}
            if self.session_token:
                config["session_token"] = self.session_token
        else:
            config["skip_signature"] = True
        if self.endpoint:
            config |= {"endpoint": self.endpoint, "virtual_hosted_style_request": False}
        http = bool(self.endpoint and self.endpoint.startswith("http://"))
        options: ClientConfig = {"allow_http": http, "timeout": f"{TIMEOUT_S}s", "connect_timeout": "5s"}
        return S3Store(bucket, client_options=options, retry_config=RETRY, **config)


# Few and quick retries: a refused connection or a wrong key is reported, not waited out.
RETRY: RetryConfig = {"max_retries": 1, "retry_timeout": timedelta(seconds=10)}


def _profile_keys(profile: str) -> tuple[str | None, str | None, str | None]:
    try:
        import boto3  # type: ignore[import-untyped]
    except ImportError:
        raise UsageError(
            f"AWS_PROFILE={profile}: reading a profile needs boto3 (pip install boto3)"
        ) from None
    try:
        credentials = boto3.Session(profile_name=profile).get_credentials()
    except Exception as exc:  # botocore's ProfileNotFound and configuration errors
        raise UsageError(f"AWS_PROFILE={profile}: {type(exc).__name__}") from None
    if credentials is None:
        return None, None, None
    frozen = credentials.get_frozen_credentials()
    return frozen.access_key, frozen.secret_key, frozen.token


@dataclass(frozen=True)
class ObjectInfo:
    """What identifies an object's content without reading it (for the fingerprint)."""

    size: int
    etag: str | None
    last_modified: str | None


def request_problem(exc: Exception) -> str:
    """The kind of failure, in words that name no secret (obstore's own text is not shown)."""
    from obstore import exceptions as errors

    text = str(exc)
    if "NoSuchBucket" in text:
        return "bucket not found"
    if isinstance(exc, FileNotFoundError | errors.NotFoundError):
        return "object not found"
    denied = "403 Forbidden" in text or "401 Unauthorized" in text  # a listing's error is generic
    if denied or isinstance(exc, errors.PermissionDeniedError | errors.UnauthenticatedError):
        return "access denied (check the credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE)"
    if "error sending request" in text or "onnect" in text:
        return "cannot connect to the endpoint (AWS_ENDPOINT_URL)"
    return f"request failed ({type(exc).__name__})"


def _refusal(url: str, exc: Exception) -> SegpipeError:
    """The one-line error for a failed request on ``url``: ``NotFoundError`` when nothing is there."""
    problem = request_problem(exc)
    error = NotFoundError if problem.endswith("not found") else InputError
    return error(f"{redact(url)}: {problem}")


def head(url: str, config: S3Config | None = None) -> ObjectInfo:
    """Size, ETag and last-modified of the object ``url`` names, read without its body."""
    if url.startswith(("http://", "https://")):
        return _http_head(url)
    import obstore

    bucket, key = bucket_key(url)
    store = (config or S3Config.from_environment()).store(bucket)
    try:
        meta = obstore.head(store, key)
    except FileNotFoundError:
        try:  # a HEAD answer has no body: a GET's says whether the bucket or the key is missing
            obstore.get(store, key)
        except Exception as exc:
            raise _refusal(url, exc) from None
        raise NotFoundError(f"{redact(url)}: object not found") from None
    except Exception as exc:
        raise _refusal(url, exc) from None
    modified = meta.get("last_modified")
    return ObjectInfo(
        int(meta["size"]), meta.get("e_tag"), None if modified is None else modified.isoformat()
    )


def _http_head(url: str) -> ObjectInfo:
    """A one-byte range GET (a presigned URL signs GET, not HEAD): size from ``Content-Range``."""
    request = urllib.request.Request(url, headers={"Range": "bytes=0-0"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            size = int(total) if total.isdigit() else int(response.headers.get("Content-Length", "0"))
            return ObjectInfo(size, response.headers.get("ETag"), response.headers.get("Last-Modified"))
    except urllib.error.HTTPError as exc:
        problem = {404: "object not found", 403: "access denied"}.get(exc.code, f"HTTP {exc.code}")
        error = NotFoundError if exc.code == 404 else InputError
        raise error(f"{redact(url)}: {problem}") from None
    except (urllib.error.URLError, OSError):
        raise InputError(f"{redact(url)}: cannot connect to the server") from None


def stored_etag(url: str, config: S3Config | None = None) -> str | None:
    """The ETag of the object stored under ``url`` ("" when the server gives none), None when
    there is none (an unreachable bucket is an error, not None)."""
    try:
        return head(url, config).etag or ""
    except NotFoundError as exc:
        if "bucket not found" in str(exc):
            raise OutputError(str(exc)) from None
        return None


def exists(url: str, config: S3Config | None = None) -> bool:
    """Whether an object is stored under ``url`` (an unreachable bucket is an error, not False)."""
    return stored_etag(url, config) is not None


def upload(local: Path, url: str, config: S3Config | None = None) -> str | None:
    """Store ``local`` under ``url``; the key appears only once the whole file is stored.
    Returns the stored object's ETag (what proves later that the object is still this one).

    obstore sends a file over a few MB as a multipart upload, completed at the end (S3
    shows nothing under the key before), a smaller one as a single PUT.
    """
    import obstore

    bucket, key = bucket_key(url)
    try:
        result: Any = obstore.put((config or S3Config.from_environment()).store(bucket), key, local)
    except Exception as exc:
        raise OutputError(f"{redact(url)}: upload failed: {request_problem(exc)}") from None
    etag = result.get("e_tag")
    return None if etag is None else str(etag)


def fetch(url: str, limit: int, config: S3Config | None = None) -> bytes | None:
    """The whole body of a small object (a STAC Item, a done manifest), None when there is none
    (a missing bucket is an error); one over ``limit`` bytes is refused (in a bucket, before its
    body moves)."""
    too_large = InputError(f"{redact(url)}: larger than {limit} bytes; not read")
    if url.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
                body: bytes = response.read(limit + 1)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise InputError(f"{redact(url)}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError):
            raise InputError(f"{redact(url)}: cannot connect to the server") from None
    else:
        try:
            size = head(url, config).size
        except NotFoundError as exc:
            if "bucket not found" in str(exc):  # not "no object": the place itself is wrong
                raise InputError(str(exc)) from None
            return None
        if size > limit:
            raise too_large
        with open_object(url, config) as stream:
            body = stream.read(limit + 1)
    if len(body) > limit:
        raise too_large
    return body


def download(url: str, local: Path, config: S3Config | None = None) -> None:
    """Fetch the object ``url`` names into ``local`` (streamed, not held in memory)."""
    import obstore

    bucket, key = bucket_key(url)
    try:
        with local.open("wb") as out:
            for chunk in obstore.get((config or S3Config.from_environment()).store(bucket), key):
                out.write(chunk)
    except Exception as exc:
        raise _refusal(url, exc) from None


class ObjectFile(io.RawIOBase):
    """A seekable, read-only binary file over an object: each read past its buffer is a range request."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader
        self.size: int = reader.size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = memoryview(self._reader.read(len(buffer)))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return int(self._reader.seek(offset, whence))

    def tell(self) -> int:
        return int(self._reader.tell())

    def close(self) -> None:
        if not self.closed:
            self._reader.close()
        super().close()


def object_size(stream: io.BufferedReader) -> int:
    """The size of the object ``open_object`` opened (known from its lookup: no request)."""
    raw = stream.raw
    assert isinstance(raw, ObjectFile)
    return raw.size


def open_object(url: str, config: S3Config | None = None) -> io.BufferedReader:
    """A seekable, read-only file over the object ``url`` names (reads of ``READ_BLOCK`` bytes)."""
    import obstore

    bucket, key = bucket_key(url)
    try:
        store = (config or S3Config.from_environment()).store(bucket)
        reader = obstore.open_reader(store, key, buffer_size=READ_BLOCK)
    except Exception as exc:
        raise _refusal(url, exc) from None
    return io.BufferedReader(ObjectFile(reader), buffer_size=READ_BLOCK)
