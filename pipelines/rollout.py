"""rollout: promote a published version to the ``stable`` label of TF Serving, or roll back.

Driven by TF Serving's model config file (``model_config_list``; the server re-reads it):

1. load the candidate beside the current ``stable`` version (``specific`` versions);
2. wait until the candidate is AVAILABLE (a load error or a timeout fails the rollout);
3. canary: send real eval rows to the candidate's version endpoint and compare with the offline
   predictions from ``evaluate`` (``canary_tolerance``) and with the latency budget;
4. move ``stable`` to the candidate (a label may only point at a loaded version, hence after 2)
   and ``previous`` to the newest AVAILABLE version older than it (the old stable, in a rollout);
   wait until the server resolves ``stable`` to the candidate;
5. keep loaded, for an instant rollback, the newest ``keep_versions`` versions up to stable and no newer
   one: a request that names no label or version gets the highest loaded version (TF Serving's rule), so
   after a rollback the version rolled back from is unloaded, and a candidate a killed rollout left loaded
   beside stable is unloaded by the next promotion.

Any failure restores the config file as it was, waits until stable is back and the candidate is
unloaded, and raises ``RolloutError`` saying which check failed and what is serving now.
Standard library and protobuf only: no TensorFlow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.config import RolloutConfig
from pipelines.objectstore import MANIFEST, Store
from pipelines.publish import CANARY
from pipelines.serving.client import ModelServerClient, VersionLoadError
from pipelines.serving.models import config_proto, version_labels
from pipelines.storage import atomic_write_bytes

log = logging.getLogger(__name__)

STABLE, PREVIOUS = "stable", "previous"
FILE_LOCK_SECONDS = 30.0  # a config file edit takes milliseconds


class RolloutError(RuntimeError):
    """A rollout check failed; the previous serving state was restored."""


@dataclass
class RolloutResult:
    model: str
    version: int
    previous_stable: int | None
    stable: int
    loaded_versions: list[int]
    canary: dict[str, Any] = field(default_factory=dict)
    changed: bool = True
    skipped_reason: str | None = None


class ConcurrentEditError(RuntimeError):
    """The config file changed under a writer that held the lock: someone edits it without the lock."""


class ServingConfigFile:
    """TF Serving's ``--model_config_file``, changed only by transactions.

    One config file serves every model, so writers must not lose each other's changes:

    - ``model_lock(model)`` is held for a whole promotion of one model (a rollout and a rollback of the same
      model run one after the other; other models are not blocked);
    - ``update(model, ...)`` edits only that model's entry, under a short lock on the file, by
      compare-and-swap: re-read, edit, check the file is still what was read, write atomically;
    - ``restore_entry(model, snapshot)`` puts back that model's entry only (another model's promotion
      that landed meanwhile stays).

    Locks are ``flock`` on sibling files: they hold across threads and processes on one host or a
    shared POSIX file system (a Kubernetes volume); the lock is released if its holder dies.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def read_text(self) -> str | None:
        return self.path.read_text() if self.path.is_file() else None

    def parse(self, text: str | None):
        return config_proto(text, str(self.path))

    @contextlib.contextmanager
    def _flock(self, name: str, timeout: float, what: str) -> Iterator[None]:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f".{self.path.name}.{name}.lock"), "a+") as handle:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{what} is held by another writer after {timeout:.0f}s "
                                           f"({handle.name})") from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def model_lock(self, model: str, timeout: float) -> contextlib.AbstractContextManager[None]:
        return self._flock(f"model-{model}", timeout, f"the rollout lock of {model}")

    def snapshot(self, model: str) -> bytes | None:
        """This model's entry as it is now (serialized), or None when it has none."""
        with self._flock("file", FILE_LOCK_SECONDS, "the model config file"):
            for entry in self.parse(self.read_text()).model_config_list.config:
                if entry.name == model:
                    return entry.SerializeToString()
        return None

    def update(self, model: str, base_path: str, edit: Callable[[Any], None]) -> None:
        """Apply ``edit`` to this model's entry (created if absent) as one compare-and-swap write."""
        from google.protobuf import text_format

        with self._flock("file", FILE_LOCK_SECONDS, "the model config file"):
            text = self.read_text()
            proto = self.parse(text)
            edit(self.entry(proto, model, base_path))
            if self.read_text() != text:
                raise ConcurrentEditError(f"{self.path} changed while {model}'s entry was edited under the lock: "
                                          "something writes it without the lock")
            atomic_write_bytes(self.path, text_format.MessageToString(proto).encode())

    def restore_entry(self, model: str, snapshot: bytes | None) -> None:
        """Put back this model's entry as ``snapshot`` (remove it when None); other entries stay as they are."""
        from google.protobuf import text_format

        with self._flock("file", FILE_LOCK_SECONDS, "the model config file"):
            proto = self.parse(self.read_text())
            entries = proto.model_config_list.config
            kept = [e for e in entries if e.name != model]
            del entries[:]
            entries.extend(kept)
            if snapshot is not None:
                entries.add().ParseFromString(snapshot)
            atomic_write_bytes(self.path, text_format.MessageToString(proto).encode())

    @staticmethod
    def entry(proto, model: str, base_path: str):
        for config in proto.model_config_list.config:
            if config.name == model:
                return config
        config = proto.model_config_list.config.add()
        config.name, config.base_path, config.model_platform = model, base_path, "tensorflow"
        return config


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """SIGTERM (a killed task) raises SystemExit in the main thread, after any handler already installed
    (Airflow's), so a promotion's ``finally`` restores the config before the process ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):
        if callable(previous):
            previous(signum, frame)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def set_versions(entry, versions: list[int], labels: dict[str, int]) -> None:
    entry.model_version_policy.specific.ClearField("versions")
    entry.model_version_policy.specific.versions.extend(sorted(set(versions)))
    entry.ClearField("version_labels")
    for key, value in labels.items():
        entry.version_labels[key] = value


def wait_for_label(client: ModelServerClient, model: str, label: str, version: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        status, body = client.request("GET", client.model_path(model, label=label))
        seen = body.get("model_version_status", [{}])[0].get("version") if status == 200 else body.get("error")
        if seen == str(version):
            return
        time.sleep(0.2)
    raise TimeoutError(f"label {label!r} of {model} did not move to version {version} in {timeout}s (last: {seen})")


def wait_until_unloaded(client: ModelServerClient, model: str, version: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.version_states(model).get(version) in (None, "END"):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{model} version {version} still loaded after {timeout}s")


def _as_list(value: Any) -> list[float]:
    return [float(v) for v in value] if isinstance(value, list) else [float(value)]


def _shown(values: list[float]) -> str:
    return ", ".join(f"{v:.6f}" for v in values) if len(values) < 8 else f"{len(values)} values"


def served_values(answer: dict[str, Any], row: dict[str, Any]) -> list[float]:
    """The canary row's output in a predict response: a scalar, or one output of a multi-output row."""
    served = answer["predictions"][0]
    if isinstance(served, dict):
        output = row.get("output", "probability")
        if output not in served:
            raise RolloutError(f"the served response has no output {output!r} (it has {sorted(served)})")
        served = served[output]
    return _as_list(served)


def canary_difference(served: list[float], offline: list[float]) -> float:
    """Largest |served - offline| (relative above magnitude 1); NaN, inf or a shape mismatch is infinite."""
    if len(served) != len(offline):
        return math.inf
    diffs = [abs(a - b) / max(1.0, abs(b)) for a, b in zip(served, offline, strict=True)]
    return math.inf if any(not math.isfinite(d) for d in diffs) else max(diffs)


def run_canary(client: ModelServerClient, model: str, version: int, rows: list[dict],
               policy: RolloutConfig) -> dict[str, Any]:
    """Real eval rows, one request each, to the candidate's version endpoint."""
    if len(rows) < policy.canary_rows:
        raise RolloutError(f"{model} version {version} shipped {len(rows)} canary rows but [rollout] canary_rows = "
                           f"{policy.canary_rows}: too few to prove it serves correctly (evaluate writes canary_rows "
                           "rows; re-run it, or lower canary_rows)")
    # One untimed warm-up request first, as TF Serving's warmup records do for a new version: the
    # first call pays one-time initialisation; the budget is for the latency traffic will see.
    started = time.perf_counter()
    client.predict(model, {"instances": [{"b64": rows[0]["b64"]}]}, version=version)
    warmup_ms = (time.perf_counter() - started) * 1000
    latencies, worst = [], 0.0
    for i, row in enumerate(rows[: policy.canary_rows]):
        started = time.perf_counter()
        answer = client.predict(model, {"instances": [{"b64": row["b64"]}]}, version=version)
        latencies.append((time.perf_counter() - started) * 1000)
        served, offline = served_values(answer, row), _as_list(row["prediction"])
        diff = canary_difference(served, offline)
        worst = max(worst, diff)
        if not diff <= policy.canary_tolerance:  # NaN fails: a NaN prediction never passes a canary
            raise RolloutError(f"canary mismatch on eval row {i}: served {_shown(served)}, offline {_shown(offline)} "
                               f"(|diff| {diff:.3g} > {policy.canary_tolerance})")
    slowest = max(latencies)
    if slowest > policy.latency_budget_ms:
        raise RolloutError(f"canary latency {slowest:.1f} ms is over the budget of {policy.latency_budget_ms} ms")
    return {"requests": len(latencies), "max_abs_diff": worst, "max_latency_ms": round(slowest, 2),
            "mean_latency_ms": round(sum(latencies) / len(latencies), 2), "warmup_ms": round(warmup_ms, 2)}


def promote(client: ModelServerClient, config_file: Path, *, model: str, base_path: str, version: int,
            canary_rows: list[dict], policy: RolloutConfig, allow_older: bool = False,
            store: Store | None = None, allow_class_change: bool = False, backfill: bool = False) -> RolloutResult:
    """Make ``version`` the stable version of ``model`` with every check, or restore what was serving.

    Versions are ordered by data time, so a version older than the current stable one (a backfill)
    is not promoted unless ``allow_older`` is set; the result then says so and nothing changes. A
    ``backfill`` run's version (a re-run of past days) needs newer data than stable's: one of stable's own
    interval is not promoted either (a backfill of the serving day replaced it, and a rollback's choice).
    With the serving root's ``store`` (a rollout's promotion), a version rolled back from (its
    ``rejected.json``) is not promoted either: a re-run that publishes the same model again gets that
    version back, and only a rollback naming it as its target serves it again. Nor is a version whose
    ``classes`` (names, or their order: the class ids) differ from stable's, unless ``allow_class_change``.
    The whole promotion holds this model's rollout lock; any failure, exception or SIGTERM restores
    this model's entry of the config file (only this model's) before it returns or exits.
    """
    cfg = ServingConfigFile(config_file)
    with _model_lock(cfg, model, policy), terminate_raises():
        return _promote_locked(cfg, client, model=model, base_path=base_path, version=version,
                               canary_rows=canary_rows, policy=policy, allow_older=allow_older, store=store,
                               allow_class_change=allow_class_change, backfill=backfill)


def _lock_wait(policy: RolloutConfig) -> float:
    """How long a promotion waits for this model's rollout lock: as long as another one may hold it (the load,
    the canary, the label; a failure then waits for the old label and the candidate's unload)."""
    return 2 * policy.load_timeout_seconds + 2 * policy.label_timeout_seconds + 120


@contextlib.contextmanager
def _model_lock(cfg: ServingConfigFile, model: str, policy: RolloutConfig) -> Iterator[None]:
    """This model's rollout lock, or a RolloutError saying who holds it (the task's own failure, named)."""
    try:
        lock = cfg.model_lock(model, _lock_wait(policy))
        lock.__enter__()
    except TimeoutError as exc:
        raise RolloutError(f"{exc}: another rollout or rollback of {model} is still running; nothing changed, "
                           "try again when it ends") from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


def _available_older(client: ModelServerClient, model: str, version: int,
                     versions: list[int]) -> tuple[list[int], list[int]]:
    """Of ``versions`` older than ``version``, newest first: those the server has AVAILABLE, which a label may
    name (a label on a version that failed to load makes the server refuse every label of the model) and which
    are kept loaded; and those whose state it did not say (no answer), kept loaded but named by no label."""
    older = [v for v in sorted(set(versions), reverse=True) if v < version]
    try:
        states = client.version_states(model)
    except OSError as exc:
        states, why = {}, f"{type(exc).__name__}: {exc}"
    else:
        why = "it listed none"
    if version not in states:  # it answered for the candidate moments ago: this answer says nothing
        log.warning("%s: the server did not say which versions are available (%s): versions %s stay loaded, "
                    "without the previous label", model, why, older)
        return [], older
    return [v for v in older if states.get(v) == "AVAILABLE"], []


def _promote_locked(cfg: ServingConfigFile, client: ModelServerClient, *, model: str, base_path: str, version: int,
                    canary_rows: list[dict], policy: RolloutConfig, allow_older: bool,
                    store: Store | None, allow_class_change: bool = False, backfill: bool = False) -> RolloutResult:
    from tensorflow_serving.config import model_server_config_pb2

    before = cfg.snapshot(model)
    entry = model_server_config_pb2.ModelConfig()
    if before is not None:
        entry.ParseFromString(before)
    labels = dict(entry.version_labels)
    loaded = list(entry.model_version_policy.specific.versions)
    old_stable = labels.get(STABLE)
    if old_stable == version:
        log.info("%s version %d is already stable; nothing to do", model, version)
        return RolloutResult(model, version, labels.get(PREVIOUS), version, sorted(loaded), changed=False)

    if store is not None and (reason := never_promoted(store, model, version)) is not None:
        log.warning("%s: not promoted: %s", model, reason)
        return RolloutResult(model, version, labels.get(PREVIOUS), old_stable, sorted(loaded), changed=False,
                             skipped_reason=reason)
    if store is not None and old_stable is not None and not allow_class_change and \
            (changed := class_change(store, model, version, old_stable)) is not None:
        reason = (f"{changed}. Pin the label's order in preprocessing_fn (README: multi-class), or set "
                  "allow_class_change to promote it")
        log.warning("%s: not promoted: %s", model, reason)
        return RolloutResult(model, version, labels.get(PREVIOUS), old_stable, sorted(loaded), changed=False,
                             skipped_reason=reason)
    # older data: an earlier day (a version of stable's own day with a lower number is the same data, e.g. a
    # re-run's model identical to the day's first version, which publish hands back: it was judged against stable)
    if old_stable is not None and version // 100 < old_stable // 100 and not allow_older:
        log.warning("%s version %d is older than stable %d: not promoted (allow_older_than_serving is off)",
                    model, version, old_stable)
        return RolloutResult(model, version, labels.get(PREVIOUS), old_stable, sorted(loaded), changed=False,
                             skipped_reason=f"version {version} was trained on older data than stable "
                                            f"{old_stable}; set allow_older_than_serving to promote it")
    if old_stable is not None and backfill and version // 100 <= old_stable // 100 and not allow_older:
        log.warning("%s version %d is a backfill of stable %d's interval: not promoted", model, version, old_stable)
        return RolloutResult(model, version, labels.get(PREVIOUS), old_stable, sorted(loaded), changed=False,
                             skipped_reason=f"version {version} is a backfill's, of the interval stable {old_stable} "
                                            "was trained on: a backfill promotes only newer data; set "
                                            "allow_older_than_serving to promote it")

    check = "load"
    if stray := [v for v in loaded if v not in labels.values() and (old_stable is None or v > old_stable)]:
        # a candidate a killed rollout left loaded beside stable (or as the only version): requests without a
        # label get it. Unloaded first, and for good: a failure below restores the entry without it
        log.warning("%s: unloading version(s) %s, unlabelled and newer than stable %s (a rollout killed before "
                    "it could restore the config)", model, stray, old_stable)
        loaded = [v for v in loaded if v not in stray]
        cfg.update(model, base_path, lambda e: set_versions(e, loaded, labels))
        before = cfg.snapshot(model)
    try:
        cfg.update(model, base_path, lambda e: set_versions(e, [*loaded, version], labels))
        log.info("loading %s version %d beside stable %s", model, version, old_stable)
        try:
            client.wait_until_available(model, version, timeout=policy.load_timeout_seconds)
        except (VersionLoadError, TimeoutError) as exc:
            raise RolloutError(f"candidate did not load: {exc}") from None

        check = "canary"
        canary = run_canary(client, model, version, canary_rows, policy)
        log.info("canary passed: %s", canary)

        check = "promotion"
        older, unknown = _available_older(client, model, version, [*loaded, *([old_stable] if old_stable else [])])
        promoted_labels = {STABLE: version, **({PREVIOUS: older[0]} if older else {})}
        cfg.update(model, base_path, lambda e: set_versions(e, [*loaded, version], promoted_labels))
        wait_for_label(client, model, STABLE, version, policy.label_timeout_seconds)
    except BaseException as exc:  # anything, a kill included: this model's previous entry is put back
        cfg.restore_entry(model, before)
        if not isinstance(exc, Exception):
            raise
        serving = _serving_now(client, model, old_stable, version, policy)
        raise RolloutError(f"rollout of {model} version {version} failed at the {check} check: "
                           f"{type(exc).__name__ + ': ' if not isinstance(exc, RolloutError | TimeoutError) else ''}"
                           f"{exc}. Rolled back: {serving}") from None

    # Promoted. Keep loaded the newest available versions older than stable, previous among them, and no newer
    # one (after a rollback, the version rolled back from would get every request that names no label)
    keep = [version, *(older or unknown)[: max(0, policy.keep_versions - 1)]]
    cfg.update(model, base_path, lambda e: set_versions(e, keep, promoted_labels))
    log.info("%s version %d is stable (was %s, previous %s); loaded versions %s", model, version, old_stable,
             promoted_labels.get(PREVIOUS), sorted(keep))
    return RolloutResult(model, version, old_stable, version, sorted(keep), canary)


def _serving_now(client: ModelServerClient, model: str, old_stable: int | None, candidate: int,
                 policy: RolloutConfig) -> str:
    """Wait until the restored config is in force, and describe what is serving."""
    notes = []
    try:
        if old_stable is not None:
            wait_for_label(client, model, STABLE, old_stable, policy.label_timeout_seconds)
        wait_until_unloaded(client, model, candidate, policy.load_timeout_seconds)
    except (TimeoutError, OSError) as exc:
        notes.append(f"WARNING: the server did not confirm it: {type(exc).__name__}: {exc}")
    stable = f"stable is version {old_stable}" if old_stable is not None else "no stable version (first rollout)"
    try:
        states = client.version_states(model)  # ({} once a first rollout's model is gone from the config)
    except OSError as exc:
        states = {"unknown": f"the model server did not answer ({exc}); the config file names the previous state"}
    left = states.get(candidate)  # what the server says, whatever the waits above saw
    if "unknown" in states or (left is None and notes and not states):
        unloaded = "state unknown"
    else:
        unloaded = "unloaded" if left in (None, "END") else f"not unloaded yet ({left})"
    return "; ".join([f"{stable}, candidate {candidate} {unloaded}, versions {json.dumps(states)}", *notes])


def canary_rows_of(store: Store, model: str, version: int) -> list[dict]:
    """The eval rows published with ``version`` (its canary.json) under the serving root ``store``."""
    rows = store.read_json(model, str(version), CANARY)
    if rows is None:
        raise RolloutError(f"{store.url(model, str(version), CANARY)} is missing: version {version} has no "
                           "canary rows to check it with")
    return rows


REJECTED = "rejected.json"  # beside a version's manifest: it was rolled back from, never a default target
RESTORED = "restored.json"  # a rejected version a rollback named as its target: its rejection, kept, and when
# what a model was trained from: two versions equal on these are the same training, whatever their bytes
TRAINED_FROM = ("interval", "input_digests", "accepted_anomalies", "code_version", "params")


def class_change(store: Store, model: str, version: int, stable: int) -> str | None:
    """How ``version``'s classes differ from those ``stable`` serves, or None. A multi-class model's
    ``class_ids`` and the positions of its ``scores`` are its classes' order: a label vocabulary TFT orders by
    frequency can reorder the same classes from one day to the next, and a client reading ids or positions
    would then read another class."""
    new = (store.read_json(model, str(version), MANIFEST) or {}).get("classes")
    old = (store.read_json(model, str(stable), MANIFEST) or {}).get("classes")
    if not isinstance(new, list) or not isinstance(old, list) or new == old:
        return None
    how = "the same classes in another order" if sorted(new) == sorted(old) else "other classes"
    return (f"version {version} has {how} than stable {stable}: class_ids 0..{len(new) - 1} are {new}, stable's "
            f"{old}, so a client reading class_ids or scores by position would read another class")


def rejected_versions(store: Store, model: str) -> dict[int, dict]:
    return {v: record for v in store.version_dirs(model) if (record := store.read_json(model, str(v), REJECTED))}


def never_promoted(store: Store, model: str, version: int) -> str | None:
    """Why a rollout must not promote ``version``, or None: it was rolled back from (its ``rejected.json``), or
    it is a retraining of one that was, on the same data, code and params (a re-run of the interval: its bytes
    may differ, as approximate quantiles and random seeds allow, but it is the model rolled back from). Only a
    rollback naming it serves it."""
    def rolled_back(record: dict) -> str:
        return (f"rolled back from ({record.get('reason', 'rolled back')}, "
                f"{record.get('rejected_at', 'time not recorded')})")

    how = None
    if (record := store.read_json(model, str(version), REJECTED)) is not None:
        how = f"version {version} was {rolled_back(record)}"
    else:
        manifest = store.read_json(model, str(version), MANIFEST) or {}
        for number, record in sorted(rejected_versions(store, model).items(), reverse=True):
            other = store.read_json(model, str(number), MANIFEST) or {}
            if number != version and all(k in manifest and manifest.get(k) == other.get(k) for k in TRAINED_FROM):
                how = (f"version {version} was trained on the same data, code and params as version {number}, "
                       f"which was {rolled_back(record)}")
                break
    if how is None:
        return None
    return (f"{how}; a rollout never serves it again: to serve it, trigger the rollback DAG with "
            f"target_version={version}")


def default_rollback_target(store: Store, model: str, stable: int | None) -> int:
    """The newest published version before ``stable`` that was never rolled back from."""
    rejected = rejected_versions(store, model)
    candidates = [v for v in store.complete_versions(model) if v != stable and v not in rejected
                  and (stable is None or v < stable)]
    if not candidates:
        partial = sorted(v for v in store.partial_versions(model) if stable is None or v < stable)
        raise RolloutError(f"{model} has no good version to roll back to before stable {stable} (rejected: "
                           f"{sorted(rejected)}; " + (f"partial, so not loadable: {partial}; " if partial else "")
                           + f"published: {store.version_dirs(model)}); name a target_version")
    return max(candidates)


def rollback(client: ModelServerClient, config_file: Path, *, model: str, base_path: str, store: Store,
             target: int | None, policy: RolloutConfig, reason: str = "") -> RolloutResult:
    """Promote an existing version with the same checks as a rollout, and mark the version rolled back from
    as rejected (``rejected.json`` in its directory), so a later default rollback never returns to it. A
    rejected version named as the target is no longer rejected (its record moves to ``restored.json``).
    Rolling forward again, from a version an earlier rollback went back to, marks nothing.

    :param target: the version to serve; default the newest good version before the current stable.

    All of it holds this model's rollout lock: the stable version read, the target chosen, the promotion and the
    record of the version left (a rollout that ran meanwhile has moved stable, and it is that version the
    rollback leaves).
    """
    cfg = ServingConfigFile(config_file)
    with _model_lock(cfg, model, policy), terminate_raises():
        return _rollback_locked(cfg, client, config_file, model=model, base_path=base_path, store=store,
                                target=target, policy=policy, reason=reason)


def _rollback_locked(cfg: ServingConfigFile, client: ModelServerClient, config_file: Path, *, model: str,
                     base_path: str, store: Store, target: int | None, policy: RolloutConfig,
                     reason: str) -> RolloutResult:
    labels = version_labels(config_file, model)
    published = store.version_dirs(model)
    stable = labels.get(STABLE)
    if target is None:
        target = default_rollback_target(store, model, stable)
    if target not in published:
        raise RolloutError(f"{model} has no version {target} under {store.url(model)}; versions are {published}")
    if (problem := store.version_problem(model, str(target))) is not None:
        raise RolloutError(f"{model} version {target} under {store.url(model)} is not a complete version, "
                           f"refusing to serve it: {problem}")
    log.info("rolling %s back from %s to version %d", model, stable, target)
    if stable is not None and (changed := class_change(store, model, target, stable)) is not None:
        log.warning("%s: this rollback changes the class ids clients see: %s", model, changed)  # served all the same
    # rolling forward again after a rollback went too far (the version left was a rollback's target) says
    # nothing against it; any other rollback rejects the version it leaves
    forward = stable is not None and target > stable and any(
        record.get("rolled_back_to") == stable for record in rejected_versions(store, model).values())
    result = _promote_locked(cfg, client, model=model, base_path=base_path, version=target,
                             canary_rows=canary_rows_of(store, model, target), policy=policy, allow_older=True,
                             store=None, allow_class_change=True)  # a rollback names the version it wants
    if result.changed and (record := store.read_json(model, str(target), REJECTED)) is not None:
        # named as the target, it serves again: no longer rejected (a rollout may promote its retraining again)
        restored = {"restored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rejection": record,
                    "reason": reason or "rolled back to"}
        store.put_bytes(json.dumps(restored, indent=1).encode(), model, str(target), RESTORED)
        store.remove(model, str(target), REJECTED)
        log.info("%s version %d serves again: no longer marked rejected (the record is in %s)", model, target,
                 RESTORED)
    if result.changed and stable is not None and stable != target and not forward:
        record = {"rejected_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rolled_back_to": target,
                  "reason": reason or "rolled back"}
        try:
            store.put_bytes(json.dumps(record, indent=1).encode(), model, str(stable), REJECTED, exclusive=True)
        except FileExistsError:
            pass  # rejected before: the first record stays
        log.info("%s version %d marked rejected: a default rollback will not return to it", model, stable)
    return result
