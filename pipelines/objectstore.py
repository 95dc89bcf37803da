"""Roots that are ``s3://bucket/prefix`` URLs as well as local directories.

TensorFlow 2.21 has no ``s3://`` file system (it left TF core in 2.6; TF Serving dropped it in
2.7), and TFT, Beam's DirectRunner and Keras all want local paths. So S3 is used in two ways:

* ``Store``: the few direct operations publish, rollout, ``versions`` and the model server need
  on a root (list version directories, read a small file, upload a directory in a safe order,
  never overwriting), with one implementation for local directories and one for S3;
* ``Mirror``: a deterministic local copy of S3 prefixes (``{staging_dir}/s3/{bucket}/{key}``) that
  a step runs on; ``pipelines.staging`` pulls a step's inputs into it and pushes its outputs back.

boto3 finds credentials and the endpoint the usual way (``AWS_*`` variables, ``AWS_ENDPOINT_URL_S3``
for MinIO or a moto server, instance roles); the Airflow side passes the client of its
``S3Hook`` instead.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

S3 = "s3://"


SAVED_MODEL = "saved_model.pb"  # a SavedModel's graph: without it a version directory is partial
MANIFEST = "manifest.json"  # publish's record of a version, written after everything else
VERSION_ORDER = (SAVED_MODEL, MANIFEST)  # the last objects of a version upload, in this order


def is_s3(root: str | os.PathLike) -> bool:
    return str(root).startswith(S3)


def split_s3(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b")``."""
    if not is_s3(url):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, key = url[len(S3):].partition("/")
    if not bucket or any(part in (".", "..") for part in key.split("/")):
        raise ValueError(f"bad S3 URL {url!r}: expected s3://bucket/prefix without . or .. parts")
    return bucket, key.strip("/")


def join(root: str, *parts: str) -> str:
    return "/".join([str(root).rstrip("/"), *(p.strip("/") for p in parts if p)])


_client = None


def s3_client():
    """One boto3 S3 client per process, configured from the environment."""
    global _client
    if _client is None:
        import boto3

        _client = boto3.session.Session().client("s3")
    return _client


# S3 answers that no retry changes: the setup is wrong (the README's "Roots on S3" says what to set)
S3_SETUP_ERRORS = {
    "NoSuchBucket": "the bucket does not exist: create it, or fix the root's URL",
    "AccessDenied": "access denied: the credentials may not use this bucket",
    "AllAccessDisabled": "access to the bucket is disabled",
    "InvalidAccessKeyId": "the endpoint knows no such access key (AWS_ACCESS_KEY_ID)",
    "SignatureDoesNotMatch": "the secret access key does not match the access key (AWS_SECRET_ACCESS_KEY)",
    "InvalidBucketName": "not a valid bucket name",
}


def s3_problem(exc: BaseException) -> str | None:
    """One line for an S3 failure that retrying cannot fix (missing credentials, a bucket that does not exist,
    access denied), naming the bucket and the endpoint; None for any other exception (a lost connection is
    retried)."""
    seen = set()  # boto3's transfers wrap botocore's error (S3UploadFailedError): look through the chain
    while exc is not None and not type(exc).__module__.startswith("botocore") and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    if exc is None or not type(exc).__module__.startswith("botocore"):
        return None
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return (f"S3: {exc}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (a step pod gets them from the Secret "
                "SKEWFREE_K8S_S3_SECRET), or give the pod's service account a role that grants the buckets")
    if not isinstance(exc, ClientError):
        return None
    error = exc.response.get("Error", {})
    code = {"403": "AccessDenied"}.get(error.get("Code"), error.get("Code"))  # a HEAD's answer has no body
    if code not in S3_SETUP_ERRORS:
        return None
    try:
        endpoint = s3_client().meta.endpoint_url
    except Exception:  # noqa: BLE001 - only for the message
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or "AWS S3"
    bucket = f" s3://{error['BucketName']}" if error.get("BucketName") else ""
    return f"S3{bucket} at {endpoint}: {S3_SETUP_ERRORS[code]} ({code} in {exc.operation_name})"


def _missing(exc: Exception) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return code in ("404", "NoSuchKey", "NotFound")


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()



VARIABLES_INDEX = "variables/variables.index"
_SHARD = re.compile(r"variables/variables\.data-(\d{5})-of-(\d{5})")


def _variables_problem(found: dict[str, int]) -> str | None:
    """Why a SavedModel without a manifest cannot load: its variables' index or a data shard is missing."""
    if VARIABLES_INDEX not in found:
        return f"no {MANIFEST} and no {VARIABLES_INDEX} (an interrupted copy, or files removed)"
    shards = [m.groups() for name in found if (m := _SHARD.fullmatch(name))]
    counts = {int(of) for _, of in shards}
    if len(counts) != 1 or {int(i) for i, _ in shards} != set(range(counts.pop())):
        return f"no {MANIFEST}, and its variables' data shards are not one complete set: " \
               f"{sorted(n for n in found if n.startswith('variables/variables.data'))[:5] or 'none'}"
    return None

class Store:
    """A root (local directory or S3 prefix) addressed by relative parts: ``store.read_json("m", "1", "x.json")``."""

    root: str

    def url(self, *parts: str) -> str:
        return join(self.root, *parts)

    def read_json(self, *parts: str) -> Any | None:
        payload = self.read_bytes(*parts)
        return None if payload is None else json.loads(payload)

    def read_bytes(self, *parts: str) -> bytes | None:  # None when absent
        raise NotImplementedError

    def list_dirs(self, *parts: str) -> list[str]:
        raise NotImplementedError

    def exists(self, *parts: str) -> bool:
        raise NotImplementedError

    def put_dir(self, source: Path, *parts: str, last: Sequence[str] = ()) -> None:
        """Upload the directory ``source`` to ``parts``, which must not exist yet (FileExistsError).

        Readers never see a half-written directory as complete: locally it is renamed into place;
        on S3 every object is written with ``If-None-Match: *`` and the files named in ``last`` go
        after all others, in that order (``VERSION_ORDER``: saved_model.pb, then the manifest). A
        failed upload removes what it wrote.
        """
        raise NotImplementedError

    def put_bytes(self, payload: bytes, *parts: str, exclusive: bool = False) -> None:
        """Write one object (atomically); ``exclusive``: only if it does not exist yet (FileExistsError)."""
        raise NotImplementedError

    def remove(self, *parts: str) -> None:
        """Delete one object; nothing when it is absent."""
        raise NotImplementedError

    def version_dirs(self, *parts: str) -> list[int]:
        """Integer-named subdirectories, as TF Serving sees model versions."""
        return sorted(int(name) for name in self.list_dirs(*parts) if name.isdigit())

    def files(self, *parts: str) -> dict[str, int]:
        """Every file under ``parts`` (relative path -> size in bytes)."""
        raise NotImplementedError

    def digest_problem(self, listed: dict[str, Any], *parts: str) -> str | None:
        """Whether the files' contents match the manifest's sha256 digests (locally; S3 objects are
        written whole, so sizes are what an interrupted or mixed upload changes)."""
        return None

    def version_problem(self, *parts: str) -> str | None:
        """Why the version directory ``parts`` is not complete, or None when it is. THE rule, for every
        reader (publish, rollback, ``versions``, the baseline, the model server):

        a version is complete when its ``saved_model.pb`` is there and, when it has a ``manifest.json``
        (every version publish writes has one, uploaded last), every file the manifest lists is there
        with the size and content it records. A SavedModel copied in by hand (no manifest) is complete
        once its graph and its variables (``variables.index`` and every data shard it is split into) are
        there, as TF Serving needs them to load it.
        """
        found = self.files(*parts)
        if SAVED_MODEL not in found:
            return f"no {SAVED_MODEL} (an interrupted copy or upload)"
        if MANIFEST not in found:
            return _variables_problem(found)
        try:
            manifest = json.loads(self.read_bytes(*parts, MANIFEST) or b"null")
        except ValueError as exc:
            return f"{MANIFEST} is not JSON ({exc})"
        listed = manifest.get("files") if isinstance(manifest, dict) else None
        if not isinstance(listed, dict):
            return None  # published before manifests listed their files: the graph is the mark
        missing = sorted(set(listed) - set(found))
        if missing:
            return f"{len(missing)} file(s) its {MANIFEST} lists are missing, e.g. {missing[0]}"
        for rel, expected in sorted(listed.items()):
            if not isinstance(expected, dict):
                return f"{MANIFEST} lists {rel} without its size and digest"
            if found[rel] != expected.get("bytes"):
                return f"{rel} has {found[rel]} bytes, its {MANIFEST} says {expected.get('bytes')}"
        return self.digest_problem(listed, *parts)

    def complete_versions(self, *parts: str) -> list[int]:
        """Version directories a reader may load (``version_problem``); partial ones are logged, never counted."""
        complete = []
        for version in self.version_dirs(*parts):
            problem = self.version_problem(*parts, str(version))
            if problem is None:
                complete.append(version)
            else:
                _report_partial(self.url(*parts, str(version)), problem)
        return complete

    def partial_versions(self, *parts: str) -> dict[int, str]:
        """Version directories that are not complete, with the reason."""
        return {v: problem for v in self.version_dirs(*parts)
                if (problem := self.version_problem(*parts, str(v))) is not None}


_reported: set[tuple[str, str]] = set()


def _report_partial(url: str, problem: str) -> None:
    if (url, problem) not in _reported:  # once per process: servers and listings poll
        _reported.add((url, problem))
        log.warning("ignoring %s: not a complete version: %s", url, problem)


def manifest_files(directory: Path) -> dict[str, dict[str, Any]]:
    """What a manifest records of the files beside it: relative path -> bytes and sha256."""
    from pipelines.storage import file_digest

    return {p.relative_to(directory).as_posix(): {"bytes": p.stat().st_size, "sha256": file_digest(p)}
            for p in sorted(Path(directory).rglob("*")) if p.is_file() and p.name != MANIFEST}


_digests: dict[tuple, str] = {}


def _cached_sha256(path: Path) -> str:
    """sha256 of a file, remembered while its size, mtime and inode stay the same (servers poll)."""
    from pipelines.storage import file_digest

    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _digests:
        _digests[key] = file_digest(path)
    return _digests[key]


class LocalStore(Store):
    def __init__(self, root: str | os.PathLike):
        self.root = str(root)

    def path(self, *parts: str) -> Path:
        return Path(self.root, *parts)

    def read_bytes(self, *parts: str) -> bytes | None:
        path = self.path(*parts)
        return path.read_bytes() if path.is_file() else None

    def exists(self, *parts: str) -> bool:
        return self.path(*parts).exists()

    def list_dirs(self, *parts: str) -> list[str]:
        base = self.path(*parts)
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def files(self, *parts: str) -> dict[str, int]:
        base = self.path(*parts)
        return {p.relative_to(base).as_posix(): p.stat().st_size for p in base.rglob("*") if p.is_file()}

    def digest_problem(self, listed: dict[str, Any], *parts: str) -> str | None:
        for rel, expected in sorted(listed.items()):
            if _cached_sha256(self.path(*parts, rel)) != expected.get("sha256"):
                return f"{rel} does not match the sha256 its {MANIFEST} records (changed after publishing)"
        return None

    def put_bytes(self, payload: bytes, *parts: str, exclusive: bool = False) -> None:
        from pipelines.storage import atomic_write_bytes

        if exclusive and self.path(*parts).exists():
            raise FileExistsError(f"{self.path(*parts)} already exists; it is never overwritten")
        atomic_write_bytes(self.path(*parts), payload)

    def remove(self, *parts: str) -> None:
        self.path(*parts).unlink(missing_ok=True)

    def put_dir(self, source: Path, *parts: str, last: Sequence[str] = ()) -> None:
        from pipelines.storage import sweep_leftovers

        final = self.path(*parts)
        final.parent.mkdir(parents=True, exist_ok=True)
        sweep_leftovers(final.parent)  # copies a killed publish left behind
        if final.exists():
            raise FileExistsError(f"{final} already exists; it is never overwritten")
        # a non-numeric hidden sibling (TF Serving ignores it), renamed into place in one step
        tmp = final.with_name(f".publishing-{final.name}-{uuid.uuid4().hex[:8]}")
        try:
            shutil.copytree(source, tmp)
            # rename() onto an existing non-empty directory fails: nothing is ever overwritten
            os.rename(tmp, final)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):  # another writer renamed its copy in first
                raise FileExistsError(f"{final} already exists; it is never overwritten") from None
            raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


class S3Store(Store):
    def __init__(self, root: str, client=None):
        self.root = root.rstrip("/")
        self.bucket, self.prefix = split_s3(root)
        self.client = client or s3_client()

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))

    def read_bytes(self, *parts: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key(*parts))["Body"].read()
        except self.client.exceptions.ClientError as exc:
            if _missing(exc):
                return None
            raise

    def read_head(self, *parts: str) -> dict | None:
        """Size and ETag of the object exactly at ``parts``; None when there is none."""
        key = self.key(*parts)
        if not key:
            return None
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except self.client.exceptions.ClientError as exc:
            if _missing(exc):
                return None
            raise
        return {"Size": head["ContentLength"], "ETag": head["ETag"]}

    def exists(self, *parts: str) -> bool:
        """An object at ``parts`` or any under ``parts/`` (not ``parts-x/`` or ``parts.bak/``, which sort first)."""
        key = self.key(*parts)
        under = self.client.list_objects_v2(Bucket=self.bucket, Prefix=key + "/", MaxKeys=1)
        return bool(under.get("Contents")) or self.read_head(*parts) is not None

    def list_dirs(self, *parts: str) -> list[str]:
        prefix = self.key(*parts)
        prefix = prefix + "/" if prefix else ""
        names = set()
        for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
            names.update(p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", []))
        return sorted(names)

    def objects(self, *parts: str) -> dict[str, dict]:
        """Every object under ``parts`` by its key relative to it, but folder markers: the empty objects named
        ``a/b/`` that the S3 console's "Create folder" makes hold no file."""
        prefix = self.key(*parts)
        prefix = prefix + "/" if prefix else ""
        found = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if not obj["Key"].endswith("/"):
                    found[obj["Key"][len(prefix):]] = obj
        return found

    def put_bytes(self, payload: bytes, *parts: str, exclusive: bool = False) -> None:
        kwargs = {"IfNoneMatch": "*"} if exclusive else {}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key(*parts), Body=payload, **kwargs)
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise FileExistsError(f"{self.url(*parts)} already exists; it is never overwritten") from None
            raise

    def remove(self, *parts: str) -> None:
        self.delete([self.key(*parts)])

    def delete(self, keys: Iterable[str]) -> None:
        """Delete ``keys``; any key S3 could not delete raises (OSError naming it): a step whose stale objects
        stay must not be taken for complete."""
        keys = list(keys)
        for i in range(0, len(keys), 1000):
            answer = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
            if errors := answer.get("Errors"):
                first = errors[0]
                raise OSError(f"could not delete {len(errors)} object(s) under s3://{self.bucket}/, e.g. "
                              f"{first.get('Key')}: {first.get('Code')} {first.get('Message', '')}".rstrip())

    def files(self, *parts: str) -> dict[str, int]:
        return {rel: obj["Size"] for rel, obj in self.objects(*parts).items()}

    def put_dir(self, source: Path, *parts: str, last: Sequence[str] = ()) -> None:
        if self.exists(*parts):
            raise FileExistsError(f"{self.url(*parts)} already exists; it is never overwritten")
        files = sorted(p.relative_to(source).as_posix() for p in Path(source).rglob("*") if p.is_file())
        if missing := [name for name in last if name not in files]:
            raise FileNotFoundError(f"{source} has no {', '.join(missing)}")
        written = []
        try:
            for rel in [f for f in files if f not in last] + list(last):
                payload = (Path(source) / rel).read_bytes()
                try:
                    self.put_bytes(payload, *parts, rel, exclusive=True)
                except FileExistsError:
                    # botocore retries a PUT whose answer was lost; when the first try had landed, the retry
                    # gets 412. Once this upload has written objects here, every rival has stopped at its
                    # first 412 (all write in one order), so an object with these very bytes is our own.
                    head = self.read_head(*parts, rel) if written else None
                    if head is None or head["ETag"].strip('"') != hashlib.md5(payload).hexdigest():  # noqa: S324
                        raise
                written.append(self.key(*parts, rel))
        except BaseException:
            try:
                self.delete(written)  # only what this upload wrote: a concurrent writer's objects stay
            except Exception as exc:  # noqa: BLE001 - the upload's own error is the one to report
                log.error("could not remove the partial upload under %s: %s", self.url(*parts), exc)
            raise


def open_store(root: str | os.PathLike, client=None) -> Store:
    return S3Store(str(root), client) if is_s3(root) else LocalStore(root)


class Mirror:
    """Local copies of S3 prefixes at fixed places under one root: ``{root}/s3/{bucket}/{key}``
    (default root ``SKEWFREE_STAGING_DIR``, else ``$TMPDIR/skewfree-staging``)."""

    def __init__(self, root: str | os.PathLike | None = None, client=None):
        root = root or os.environ.get("SKEWFREE_STAGING_DIR") or Path(tempfile.gettempdir(), "skewfree-staging")
        self.base = Path(root).resolve() / "s3"
        self._client = client

    @property
    def client(self):
        return self._client or s3_client()

    def local(self, url: str) -> Path:
        bucket, key = split_s3(url)
        return self.base / bucket / key if key else self.base / bucket

    def url(self, path: str | os.PathLike) -> str | None:
        """The S3 URL a mirrored local path stands for; None for any other path."""
        try:
            rel = Path(os.path.abspath(path)).relative_to(self.base)
        except ValueError:
            return None
        return S3 + rel.as_posix()

    def to_urls(self, value: Any) -> Any:
        """``value`` (JSON-like) with every mirrored local path written as its S3 URL."""
        prefix = str(self.base) + "/"
        return _replace_prefix(value, prefix, S3)

    def to_local(self, value: Any) -> Any:
        return _replace_prefix(value, S3, str(self.base) + "/")

    def pull(self, url: str) -> Path:
        """Make the local copy of ``url`` (one object, or every object under a prefix) equal to S3's.

        Files already present with the same content are not downloaded again; local files that
        are not on S3 any more are removed. A URL with nothing under it leaves nothing locally.
        """
        store = S3Store(url, self.client)
        local = self.local(url)
        single = store.read_head()
        if single is not None:
            self._fetch(store, "", single, local)
            return local
        remote = store.objects()
        if local.is_file():
            local.unlink()
        if local.is_dir():
            for path in local.rglob("*"):
                if path.is_file() and path.relative_to(local).as_posix() not in remote:
                    path.unlink()
        for rel, obj in remote.items():
            self._fetch(store, rel, obj, local / rel)
        return local

    def _fetch(self, store: S3Store, rel: str, obj: dict, local: Path) -> None:
        etag = obj["ETag"].strip('"')
        if local.is_file() and local.stat().st_size == obj["Size"] and ("-" in etag or _md5(local) == etag):
            return
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.tmp-{uuid.uuid4().hex[:8]}")
        store.client.download_file(store.bucket, store.key(rel), str(tmp))
        os.replace(tmp, local)

    def push(self, path: Path, *, last: str | None = None, prune: bool = False,
             retract_last: bool = True) -> str:
        """Upload the mirrored directory ``path`` to its URL; ``last`` (e.g. result.json, the marker that
        says the output is complete) is removed first and uploaded after everything else. With
        ``retract_last=False`` the old ``last`` stays until it is overwritten (a checkpoint state file
        that names files the upload does not delete). With ``prune``, objects that are not in the local
        directory any more are deleted before a retracted ``last`` is written (after it otherwise), and a
        failed delete raises: a marker never stands over a mix of two outputs."""
        url = self.url(path)
        if url is None:
            raise ValueError(f"{path} is not under the staging mirror {self.base}")
        store = S3Store(url, self.client)
        before = store.objects()
        if retract_last and last is not None and last in before:
            store.delete([store.key(last)])
        files = sorted(p.relative_to(path).as_posix() for p in Path(path).rglob("*")
                       if p.is_file() and ".tmp-" not in p.name)
        ordered = [f for f in files if f != last] + ([last] if last in files else [])
        # a marker (retracted first) goes up after the prune; a state file that names files goes up before
        # it (retract_last=False), so the files it named stay until the new one names others
        prune_before_last = prune and retract_last
        for rel in ordered:
            if rel == last and prune_before_last and (stale := set(before) - set(files) - {last}):
                store.delete(store.key(rel) for rel in sorted(stale))
                prune = False
            obj = before.get(rel)
            local = Path(path) / rel
            if rel != last and obj is not None and obj["Size"] == local.stat().st_size \
                    and obj["ETag"].strip('"') == _md5(local):
                continue  # already there
            self.client.upload_file(str(local), store.bucket, store.key(rel))
        if prune and (stale := set(before) - set(files)):
            try:
                store.delete(store.key(rel) for rel in sorted(stale))
            except OSError as exc:
                if last is not None and retract_last:
                    raise
                # a state file that names only the new files is already up: the stale ones are just space
                log.warning("could not prune stale objects under %s (they are no longer referenced): %s", url, exc)
        return url

    def push_file(self, path: Path) -> str:
        url = self.url(path)
        if url is None:
            raise ValueError(f"{path} is not under the staging mirror {self.base}")
        bucket, key = split_s3(url)
        self.client.upload_file(str(path), bucket, key)
        return url

    def delete(self, url: str) -> None:
        store = S3Store(url, self.client)
        store.delete(store.key(rel) for rel in store.objects())
        shutil.rmtree(self.local(url), ignore_errors=True)


def _replace_prefix(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return new + value[len(old):] if value.startswith(old) else value
    if isinstance(value, dict):
        return {_replace_prefix(k, old, new): _replace_prefix(v, old, new) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_replace_prefix(v, old, new) for v in value]
    return value
