"""Which versions are loaded: file-system polling, version policies, the model config file, labels.

Semantics follow TF Serving:
- a version is an integer-named directory under the model's base path; other
  names (such as an in-progress ``.publishing-...`` directory) are ignored;
- policy ``latest`` (default, ``num_versions`` 1), ``specific`` or ``all``;
- a new version is loaded before an old one is unloaded, and an old one is kept
  while no wanted version is AVAILABLE (availability-preserving);
- ``version_labels`` may only point at a version that is AVAILABLE; a label
  update that breaks this rule is refused and the previous labels stay;
- the config file (``model_config_list`` in protobuf text format) is re-read
  when it changes.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.objectstore import LocalStore, Mirror, S3Store, is_s3, join, open_store

log = logging.getLogger(__name__)

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


class ServingError(Exception):
    """An error with TF Serving's HTTP status: 404 for unknown servables, 400 for bad requests."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ModelSpec:
    name: str
    base_path: str
    policy: str = "latest"  # latest | specific | all
    num_versions: int = 1
    versions: tuple[int, ...] = ()
    labels: tuple[tuple[str, int], ...] = ()


def config_proto(text: str | None, source: str = "<config>"):
    """A ``ModelServerConfig`` (``model_config_list`` text format), parsed with tensorflow-serving-api's protos."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    proto = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text or "", proto)
    except text_format.ParseError as exc:
        raise ValueError(f"{source}: not a valid ModelServerConfig: {exc}") from None
    return proto


def labels_in(text: str | None, model: str, source: str = "<config>") -> dict[str, int]:
    """``version_labels`` of ``model`` in model config text (empty if there is none or no such model)."""
    for entry in config_proto(text, source).model_config_list.config:
        if entry.name == model:
            return dict(entry.version_labels)
    return {}


def version_labels(config_file: Path, model: str) -> dict[str, int]:
    """``version_labels`` of ``model`` in a model config file (empty if the file or model is absent)."""
    path = Path(config_file)
    return labels_in(path.read_text() if path.is_file() else None, model, str(path))


def parse_model_config(text: str, source: str = "<config>") -> list[ModelSpec]:
    """``model_config_list`` text proto -> specs."""
    proto = config_proto(text, source)
    specs = []
    for config in proto.model_config_list.config:
        if not config.name or not config.base_path:
            raise ValueError(f"{source}: every config needs a name and a base_path")
        if config.model_platform not in ("", "tensorflow"):
            raise ValueError(f"{source}: model {config.name}: only model_platform 'tensorflow' is supported")
        policy = config.model_version_policy.WhichOneof("policy_choice") or "latest"
        specs.append(ModelSpec(
            name=config.name,
            base_path=config.base_path,
            policy=policy,
            num_versions=(config.model_version_policy.latest.num_versions or 1) if policy == "latest" else 1,
            versions=tuple(config.model_version_policy.specific.versions),
            labels=tuple(sorted(config.version_labels.items())),
        ))
    if len({s.name for s in specs}) != len(specs):
        raise ValueError(f"{source}: model names must be unique")
    return specs


LOAD_RETRY_SECONDS = 60.0  # as TF Serving's --load_retry_interval_micros: a failed version is retried ...
MAX_LOAD_RETRIES = 5  # ... this many times (and at once whenever its directory changes)


def directory_state(location: str) -> tuple:
    """The files of a version directory with sizes and change marks: a failed load is retried when it changes."""
    if is_s3(location):
        return tuple(sorted((key, obj["ETag"]) for key, obj in S3Store(location).objects().items()))
    root = Path(location)
    if not root.is_dir():
        return ()
    return tuple(sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                        for p in root.rglob("*") if p.is_file()))


def version_dirs(base_path: str) -> list[int]:
    """Integer-named version directories; on S3 only complete ones (their saved_model.pb, which
    publish uploads last, is there)."""
    store = open_store(base_path)
    return store.complete_versions() if isinstance(store, S3Store) else store.version_dirs()


@dataclass(frozen=True)
class Servable:
    """What one request uses: a snapshot taken under the lock, so an unload while the request
    runs cannot pull the model out from under it."""

    number: int
    loaded: Any
    signature_defs: Any
    nullable: frozenset[str] | None = None  # raw features that may be missing (None: not known)
    checks_values: bool = False  # its signatures refuse NaN and extra values themselves (SERVING_CHECKS)


@dataclass
class Version:
    number: int
    state: str = START
    error_code: str = "OK"
    error_message: str = ""
    loaded: Any = None  # the tf.saved_model.load result while AVAILABLE
    signature_defs: Any = None
    nullable: frozenset[str] | None = None
    checks_values: bool = False
    files: tuple = ()  # what the directory held when a load failed: a change retries at once
    failed_at: float = 0.0
    attempts: int = 0

    def status(self) -> dict:
        return {"version": str(self.number), "state": self.state,
                "status": {"error_code": self.error_code, "error_message": self.error_message}}


@dataclass
class Model:
    spec: ModelSpec
    versions: dict[int, Version] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)


def _nullable(path: Path) -> frozenset[str] | None:
    """The raw features the model lets be missing, from the description export ships with it."""
    import json

    from pipelines.schema import RAW_FEATURES_ASSET

    asset = Path(path) / RAW_FEATURES_ASSET
    if not asset.is_file():
        return None
    return frozenset(f["name"] for f in json.loads(asset.read_text()) if f["nullable"])


def _checks_values(path: Path) -> bool:
    """Whether the version's signatures refuse every value check the local server would make row by row (an
    unreadable or older list: no, and the server checks them itself)."""
    import json

    from pipelines.schema import SERVING_CHECKS, SERVING_CHECKS_ASSET

    asset = Path(path) / SERVING_CHECKS_ASSET
    try:
        return asset.is_file() and set(SERVING_CHECKS) <= set(json.loads(asset.read_text()))
    except (OSError, ValueError, TypeError):
        return False


class ModelManager:
    """Keeps the wanted versions of every model loaded; thread-safe for readers."""

    def __init__(self, specs: list[ModelSpec] | None = None, *, config_file: str | None = None,
                 fs_poll_seconds: float = 1.0, config_poll_seconds: float = 1.0):
        self._lock = threading.RLock()
        self._models: dict[str, Model] = {}
        self._config_file = config_file
        self._config_text: str | None = None
        self._specs = list(specs or [])
        self.fs_poll_seconds = fs_poll_seconds
        self.config_poll_seconds = config_poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.config_error: str | None = None  # the config file could not be parsed: the previous one stays
        self._config_read = False  # a config was read: a file gone later keeps it (a missing one at start fails)
        self.label_error: str | None = None  # a label pointed at a version that is not loaded: refused
        self._told_empty: set[tuple[str, str]] = set()  # (model, base path) with no version, already logged

    # -- lifecycle ----------------------------------------------------------------
    def start(self) -> None:
        self.poll_once()
        self._thread = threading.Thread(target=self._run, name="model-manager", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        next_config = time.monotonic() + self.config_poll_seconds
        while not self._stop.wait(self.fs_poll_seconds):
            try:
                if self._config_file and time.monotonic() >= next_config:
                    next_config = time.monotonic() + self.config_poll_seconds
                    self._read_config()
                self._reconcile()
            except Exception:  # a bad poll must not kill the server; it is logged and retried
                log.exception("model manager poll failed")

    def poll_once(self) -> None:
        if self._config_file:
            self._read_config()
        self._reconcile()

    # -- config -------------------------------------------------------------------
    def _read_config(self) -> None:
        try:
            text = Path(self._config_file).read_text()
        except OSError as exc:  # gone (a redeploy, a hand edit): what is loaded keeps serving, and disk polling goes on
            if not self._config_read:
                raise  # at start: a wrong path, said at once
            error = f"cannot read the model config file, keeping the previous config: {exc}"
            if error != self.config_error:  # said once, not at every poll
                log.error("%s", error)
            self.config_error, self._config_text = error, None  # (re-read in full once it is back)
            return
        if text == self._config_text:
            return
        try:
            specs = parse_model_config(text, self._config_file)
        except ValueError as exc:
            self.config_error = str(exc)
            log.error("keeping the previous config: %s", exc)
            self._config_text = text
            return
        self._config_text, self._config_read = text, True
        self.config_error = None
        with self._lock:
            self._specs = specs
        log.info("model config %s: %s", self._config_file, [(s.name, s.policy, s.versions) for s in specs])

    # -- reconcile ----------------------------------------------------------------
    def _wanted(self, spec: ModelSpec, on_disk: list[int]) -> list[int]:
        if spec.policy == "specific":  # named versions are loaded (a partial one reports its load error)
            return [v for v in spec.versions if v in on_disk]
        # "latest"/"all" count complete versions only: a half-copied directory never hides the good ones
        complete = [v for v in open_store(spec.base_path).complete_versions() if v in on_disk]
        if len(complete) < len(on_disk):
            log.debug("%s: ignoring incomplete version directories %s", spec.name, sorted(set(on_disk) - set(complete)))
        return complete if spec.policy == "all" else complete[-spec.num_versions:]

    def _reconcile(self) -> None:
        with self._lock:
            specs = list(self._specs)
            for name in set(self._models) - {s.name for s in specs}:
                self._unload_all(self._models.pop(name))
        for spec in specs:
            with self._lock:
                model = self._models.setdefault(spec.name, Model(spec))
                model.spec = spec
            on_disk = version_dirs(spec.base_path)
            if not on_disk and (spec.name, spec.base_path) not in self._told_empty:  # once, as TF Serving's log
                self._told_empty.add((spec.name, spec.base_path))
                log.warning("no versions of servable %s found under base path %s%s; polling for one", spec.name,
                            spec.base_path, "" if is_s3(spec.base_path) or Path(spec.base_path).is_dir()
                            else " (no such directory: a typo?)")
            elif on_disk:
                self._told_empty.discard((spec.name, spec.base_path))
            wanted = self._wanted(spec, on_disk)
            for number in wanted:  # load new versions first ...
                version = model.versions.get(number)
                location = join(spec.base_path, str(number))
                if version is None or version.state == END and version.error_code == "OK":
                    self._load(model, number, location)
                elif version.state == END and self._retry_due(version, location):
                    log.info("retrying %s version %d (attempt %d)", spec.name, number, version.attempts + 1)
                    self._load(model, number, location, attempts=version.attempts)
            with self._lock:  # ... then unload the unwanted, but never the last available one
                if any(model.versions[v].state == AVAILABLE for v in wanted if v in model.versions):
                    for number, version in model.versions.items():
                        if number not in wanted and version.state == AVAILABLE:
                            self._unload(version)
                self._apply_labels(model, spec)

    @staticmethod
    def _retry_due(version: Version, location: str) -> bool:
        """A failed version is retried when its directory changed (a partial upload completed) or, up to
        MAX_LOAD_RETRIES times, every LOAD_RETRY_SECONDS (a transient error)."""
        try:
            changed = directory_state(location) != version.files
        except OSError:
            changed = False
        return changed or (version.attempts <= MAX_LOAD_RETRIES
                           and time.monotonic() - version.failed_at >= LOAD_RETRY_SECONDS)

    def _load(self, model: Model, number: int, location: str, attempts: int = 0) -> None:
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2

        version = Version(number, state=LOADING, attempts=attempts + 1)
        with self._lock:
            model.versions[number] = version
        log.info("loading %s version %d from %s", model.spec.name, number, location)
        try:
            # TensorFlow cannot read s3:// itself: a version on S3 is loaded from a local copy
            path = Mirror().pull(location) if is_s3(location) else Path(location)
            if (problem := LocalStore(path.parent).version_problem(path.name)) is not None:
                raise ValueError(f"not a complete version: {problem}")
            loaded = tf.saved_model.load(str(path))
            proto = saved_model_pb2.SavedModel()
            proto.ParseFromString((path / "saved_model.pb").read_bytes())
            signature_defs = proto.meta_graphs[0].signature_def
            nullable, checks_values = _nullable(path), _checks_values(path)
        except Exception as exc:  # any load failure is reported in the version status, as TF Serving does
            log.error("failed to load %s version %d: %s", model.spec.name, number, exc)
            try:
                files = directory_state(location)
            except OSError:
                files = ()
            with self._lock:
                version.files, version.failed_at = files, time.monotonic()
                version.state, version.error_code = END, "UNKNOWN"
                version.error_message = f"Failed to load servable version {number}: {type(exc).__name__}: {exc}"
            return
        with self._lock:
            version.loaded, version.signature_defs, version.state = loaded, signature_defs, AVAILABLE
            version.nullable, version.checks_values = nullable, checks_values
        log.info("%s version %d is AVAILABLE", model.spec.name, number)

    def _unload(self, version: Version) -> None:
        version.state = UNLOADING
        version.loaded = None
        version.state = END
        log.info("unloaded version %d", version.number)

    def _unload_all(self, model: Model) -> None:
        for version in model.versions.values():
            if version.state == AVAILABLE:
                self._unload(version)

    def _apply_labels(self, model: Model, spec: ModelSpec) -> None:
        wanted = dict(spec.labels)
        if wanted == model.labels:
            return
        unavailable = {k: v for k, v in wanted.items()
                       if v not in model.versions or model.versions[v].state != AVAILABLE}
        if unavailable:
            # TF Serving refuses to point a label at a version that is not loaded.
            waiting = any(model.versions.get(v) and model.versions[v].state in (START, LOADING)
                          for v in unavailable.values())
            message = (f"Request to assign label to version(s) {sorted(unavailable.values())} of model "
                       f"{spec.name}, which is not currently available for inference")
            if not waiting and message != self.label_error:
                self.label_error = message
                log.error(message)
            return
        model.labels = wanted
        self.label_error = None

    # -- lookups for the REST layer ------------------------------------------------
    def statuses(self, name: str, version: int | None = None, label: str | None = None) -> list[dict]:
        with self._lock:
            model = self._models.get(name)
            if model is None or not model.versions:
                raise ServingError(404, f"Could not find any versions of model {name}")
            if label is not None:
                version = self._label_version(model, label)
            if version is not None:
                if version not in model.versions:
                    raise ServingError(404, f"Could not find version {version} of model {name}")
                return [model.versions[version].status()]
            return [v.status() for _, v in sorted(model.versions.items(), reverse=True)]

    def servable(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The AVAILABLE version a request addresses (latest available when unspecified)."""
        with self._lock:
            model = self._models.get(name)
            request = (f"Specific({name}, {version})" if version is not None else
                       f"Label({name}, {label})" if label is not None else f"Latest({name})")
            if model is None:
                raise ServingError(404, f"Servable not found for request: {request}")
            if label is not None:
                version = self._label_version(model, label)
            if version is None:
                available = [n for n, v in model.versions.items() if v.state == AVAILABLE]
                if not available:
                    raise ServingError(404, f"Servable not found for request: {request}")
                version = max(available)
            found = model.versions.get(version)
            if found is None or found.state != AVAILABLE:
                raise ServingError(404, f"Servable not found for request: {request}")
            return Servable(found.number, found.loaded, found.signature_defs, found.nullable, found.checks_values)

    def _label_version(self, model: Model, label: str) -> int:
        if label not in model.labels:
            raise ServingError(400, f"Unrecognized servable version label: {label}")
        return model.labels[label]
