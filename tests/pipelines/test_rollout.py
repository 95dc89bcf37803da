"""Guarded rollout against the local model server in model-config-file mode (real TF models)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipelines.config import RolloutConfig
from pipelines.objectstore import LocalStore
from pipelines.rollout import RolloutError, ServingConfigFile, never_promoted, promote, rollback
from pipelines.serving.client import ModelServerClient
from pipelines.serving.models import version_labels
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.slow
MODEL = "taxi"
V0, V1, V2, V3, V4 = 2026110800, 2026110900, 2026111000, 2026111001, 2026111002
POLICY = RolloutConfig(load_timeout_seconds=60, label_timeout_seconds=30, latency_budget_ms=5000)


@pytest.fixture(scope="module")
def stack(trained_run, tmp_path_factory):
    """A serving root with good versions V0, V1, V2, a canary-mismatch V3, a corrupt V4, and a server."""
    root = tmp_path_factory.mktemp("serving")
    base = root / MODEL
    model_dir = Path(trained_run["evaluation"].saved_model)
    canary = json.loads(Path(trained_run["evaluation"].canary).read_text())
    for version in (V0, V1, V2, V3, V4):
        shutil.copytree(model_dir, base / str(version))
        rows = canary
        if version == V3:  # offline predictions that the served model will not reproduce
            rows = [{**r, "prediction": min(1.0, r["prediction"] + 0.2)} for r in canary]
        (base / str(version) / "canary.json").write_text(json.dumps(rows))
    for data in (base / str(V4) / "variables").glob("variables.data-*"):
        data.write_bytes(data.read_bytes()[:64])  # truncated variables
    config = root / "models.config"
    config.write_text("model_config_list {\n}\n")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "serve", "--model-config-file", str(config), "--port", str(port),
         "--model-config-file-poll-wait-seconds", "0.2", "--file-system-poll-wait-seconds", "0.2"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = ModelServerClient(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            client.request("GET", "/v1/models/none")
            break
        except OSError:
            time.sleep(0.2)
    yield {"client": client, "config": config, "base": base, "canary": canary}
    server.terminate()
    server.wait(timeout=30)


def go(stack, version, **kwargs):
    return promote(stack["client"], stack["config"], model=MODEL, base_path=str(stack["base"]), version=version,
                   canary_rows=json.loads((stack["base"] / str(version) / "canary.json").read_text()),
                   policy=kwargs.pop("policy", POLICY), **kwargs)


def ensure_v1_stable(stack) -> None:
    """Each test starts from V1 stable, so it also runs alone (pytest -k)."""
    if version_labels(stack["config"], MODEL).get("stable") != V1:
        rollback(stack["client"], stack["config"], model=MODEL, base_path=str(stack["base"]),
                 store=LocalStore(stack["base"].parent), target=V1, policy=POLICY)


def stable_of(stack) -> int:
    status, body = stack["client"].request("GET", f"/v1/models/{MODEL}/labels/stable")
    assert status == 200, body
    return int(body["model_version_status"][0]["version"])


def test_first_rollout_makes_the_candidate_stable(stack):
    result = go(stack, V1)
    assert result.changed and result.stable == V1 and result.previous_stable is None
    assert result.canary["requests"] == 32 and result.canary["max_abs_diff"] <= 1e-5
    assert stable_of(stack) == V1
    answer = stack["client"].predict(MODEL, {"instances": [{"b64": stack["canary"][0]["b64"]}]}, label="stable")
    assert abs(answer["predictions"][0] - stack["canary"][0]["prediction"]) < 1e-5


@pytest.mark.parametrize(("version", "policy", "check", "says"), [
    (V3, POLICY, "canary", "canary mismatch on eval row 0"),
    (V4, POLICY, "load", "candidate did not load: Failed to load servable version"),
    (V2, dataclasses.replace(POLICY, latency_budget_ms=0.001), "canary", "over the budget of 0.001 ms"),
], ids=["canary-mismatch", "corrupt-candidate", "latency-budget"])
def test_failed_check_restores_stable(stack, version, policy, check, says):
    ensure_v1_stable(stack)
    before = stack["config"].read_text()
    with pytest.raises(RolloutError) as err:
        go(stack, version, policy=policy)
    message = str(err.value)
    assert f"failed at the {check} check" in message and says in message
    assert f"Rolled back: stable is version {V1}, candidate {version} unloaded" in message
    assert stack["config"].read_text() == before
    assert stable_of(stack) == V1
    assert stack["client"].version_states(MODEL).get(version) in (None, "END")


def test_older_version_is_not_promoted_over_newer_stable(stack):
    ensure_v1_stable(stack)
    result = go(stack, V0)
    assert not result.changed and result.stable == V1
    assert "trained on older data than stable" in result.skipped_reason
    assert stable_of(stack) == V1


def test_a_lower_version_of_stables_own_day_is_not_older_data(stack):
    """A user trial: a manual run of the serving day trained the day's first model again (publish handed back
    its version, 00) and beat stable (02, the same day) at the gates; it was refused as 'trained on older data'.
    Versions of one day hold the same data: it is promoted."""
    same_day = V1 + 2
    shutil.copytree(stack["base"] / str(V1), stack["base"] / str(same_day))
    try:
        ensure_v1_stable(stack)
        assert go(stack, same_day).changed and stable_of(stack) == same_day
        result = go(stack, V1)
        assert result.changed and result.skipped_reason is None and stable_of(stack) == V1, result
    finally:
        if stable_of(stack) != V1:
            go(stack, V1, allow_older=True)
        shutil.rmtree(stack["base"] / str(same_day), ignore_errors=True)


def test_a_backfill_of_the_serving_interval_is_not_promoted(stack):
    """A user trial backfilled stable's own day (--reprocess-behavior completed, force): the new version of that
    day, one number higher, replaced stable, which a rollback had chosen. A backfill promotes only newer data."""
    same_day = V1 + 1
    shutil.copytree(stack["base"] / str(V1), stack["base"] / str(same_day))
    try:
        ensure_v1_stable(stack)
        result = go(stack, same_day, backfill=True)
        assert not result.changed and result.stable == V1 and stable_of(stack) == V1
        assert result.skipped_reason == (f"version {same_day} is a backfill's, of the interval stable {V1} was trained "
                                         "on: a backfill promotes only newer data; set allow_older_than_serving to "
                                         "promote it")
    finally:
        shutil.rmtree(stack["base"] / str(same_day))


def test_a_version_whose_class_ids_mean_other_classes_is_not_promoted_unless_allowed(stack, caplog):
    """A user trial: a retrain on other data reordered a frequency-ordered label vocabulary, and the new version
    answered the same request with class_ids 3 where stable said 0 for the same class, promoted silently."""
    ensure_v1_stable(stack)
    store = LocalStore(stack["base"].parent)
    manifests = [stack["base"] / str(v) / "manifest.json" for v in (V1, V2)]
    try:
        for path, classes in zip(manifests, (["urgent", "high", "low"], ["low", "high", "urgent"]), strict=True):
            path.write_text(json.dumps({"classes": classes}))
        before = stack["config"].read_text()
        result = go(stack, V2, store=store)
        assert not result.changed and stable_of(stack) == V1 and stack["config"].read_text() == before
        assert result.skipped_reason == (
            f"version {V2} has the same classes in another order than stable {V1}: class_ids 0..2 are ['low', "
            "'high', 'urgent'], stable's ['urgent', 'high', 'low'], so a client reading class_ids or scores by "
            "position would read another class. Pin the label's order in preprocessing_fn (README: multi-class), "
            "or set allow_class_change to promote it")
        manifests[1].write_text(json.dumps({"classes": ["urgent", "high", "low", "critical"]}))
        assert "has other classes than stable" in go(stack, V2, store=store).skipped_reason
        assert go(stack, V2, store=store, allow_class_change=True).changed and stable_of(stack) == V2
        # a rollback serves the version it names, and says the class ids change
        with caplog.at_level(logging.WARNING, logger="pipelines.rollout"):
            rollback(stack["client"], stack["config"], model=MODEL, base_path=str(stack["base"]), store=store,
                     target=V1, policy=POLICY)
        assert stable_of(stack) == V1
        assert f"this rollback changes the class ids clients see: version {V1} has other classes than stable {V2}" \
            in caplog.text
    finally:
        for path in manifests:
            path.unlink(missing_ok=True)


def test_no_failed_request_during_promotion_and_rollback(stack):
    ensure_v1_stable(stack)
    client, failures, latencies = stack["client"], [], []
    stop = threading.Event()
    body = {"instances": [{"b64": row["b64"]} for row in stack["canary"][:4]]}

    def load():
        deadline = time.monotonic() + 300  # bounded even if the rollout hangs
        while not stop.is_set() and time.monotonic() < deadline and len(latencies) < 20_000:
            started = time.perf_counter()
            status, answer = client.request("POST", f"/v1/models/{MODEL}/labels/stable:predict", body)
            latencies.append(time.perf_counter() - started)
            if status != 200 or len(answer.get("predictions", [])) != 4:
                failures.append((status, answer))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        promoted = go(stack, V2)
        time.sleep(0.5)
        rolled = rollback(client, stack["config"], model=MODEL, base_path=str(stack["base"]),
                          store=LocalStore(stack["base"].parent), target=None, policy=POLICY)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    print(f"\nload test: {len(latencies)} requests to label 'stable', {len(failures)} failed, "
          f"during promotion {V1}->{V2} and rollback {V2}->{V1}")
    assert promoted.stable == V2 and promoted.previous_stable == V1
    assert rolled.stable == V1 and rolled.previous_stable == V2
    assert stable_of(stack) == V1
    assert len(latencies) > 50
    assert failures == []


def test_rollback_to_a_named_version_and_unknown_versions(stack):
    ensure_v1_stable(stack)
    with pytest.raises(RolloutError, match=r"has no version 123 under .*; versions are \[2026110800"):
        rollback(stack["client"], stack["config"], model=MODEL, base_path=str(stack["base"]),
                 store=LocalStore(stack["base"].parent), target=123, policy=POLICY)
    result = rollback(stack["client"], stack["config"], model=MODEL, base_path=str(stack["base"]),
                      store=LocalStore(stack["base"].parent), target=V0, policy=POLICY)
    assert result.stable == V0 and result.previous_stable == V1  # a rollback may go to older data on purpose
    assert stable_of(stack) == V0
    # the version rolled back from is unloaded: a request that names no label or version gets the highest
    # loaded version (TF Serving's rule), which a user trial found was still the one rolled back from
    labels = version_labels(stack["config"], MODEL)
    assert labels == {"stable": V0}  # (previous: the newest available version older than stable; none here)
    assert list(version_states_of(stack)) == [V0]


def test_concurrent_rollouts_of_two_models_and_of_one_model_all_land(stack):
    """One config file serves every model: two models promoted at once, and a rollout beside a rollback of
    the same model, lose no change (per-model lock for a promotion, compare-and-swap for each edit)."""
    ensure_v1_stable(stack)
    other = stack["base"].parent / "taxi_two"
    for version in (V1, V2):
        if not (other / str(version)).exists():
            shutil.copytree(stack["base"] / str(version), other / str(version))
    results, errors = {}, []

    def run(name, fn):
        try:
            results[name] = fn()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append((name, exc))

    def promote_other():
        return promote(stack["client"], stack["config"], model="taxi_two", base_path=str(other), version=V2,
                       canary_rows=stack["canary"], policy=POLICY)

    def roll_back():
        return rollback(stack["client"], stack["config"], model=MODEL, base_path=str(stack["base"]),
                        store=LocalStore(stack["base"].parent), target=V0, policy=POLICY)

    threads = [threading.Thread(target=run, args=("taxi", lambda: go(stack, V2))),
               threading.Thread(target=run, args=("taxi_two", promote_other)),
               threading.Thread(target=run, args=("rollback", roll_back))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    assert results["taxi_two"].stable == V2 and version_labels(stack["config"], "taxi_two") == {"stable": V2}
    # the two promotions of taxi ran one after the other: the last one serves; a rollout's previous is the
    # version before it, and nothing newer than stable stays loaded
    taxi = version_labels(stack["config"], MODEL)
    assert taxi in ({"stable": V2, "previous": V0}, {"stable": V0}), taxi
    assert stable_of(stack) == taxi["stable"]
    assert max(version_states_of(stack)) == taxi["stable"]
    for record in stack["base"].glob("*/rejected.json"):  # (the rollback rejected what it left)
        record.unlink()


def test_a_rollback_beside_a_rollout_leaves_the_version_stable_when_it_runs(stack, monkeypatch):
    """A user trial started a rollback while a rollout was at its canary: the rollback read stable before it
    waited for the rollout's lock, so it marked the version stable before the rollout rejected, and the one it
    really left (the rollout's) unmarked, which a re-run then promoted again. It reads stable under the lock."""
    import pipelines.rollout

    ensure_v1_stable(stack)
    for record in stack["base"].glob("*/rejected.json"):
        record.unlink()
    at_canary, go_on = threading.Event(), threading.Event()
    real_canary = pipelines.rollout.run_canary

    def held_canary(*args, **kwargs):
        at_canary.set()
        assert go_on.wait(120)
        return real_canary(*args, **kwargs)

    monkeypatch.setattr(pipelines.rollout, "run_canary", held_canary)
    results = {}
    rollout_thread = threading.Thread(target=lambda: results.update(rollout=go(stack, V2)))
    rollout_thread.start()
    assert at_canary.wait(120)
    rollback_thread = threading.Thread(target=lambda: results.update(rollback=rollback(
        stack["client"], stack["config"], model=MODEL, base_path=str(stack["base"]),
        store=LocalStore(stack["base"].parent), target=V0, policy=POLICY, reason="overlap")))
    rollback_thread.start()
    time.sleep(1.0)  # the rollback is waiting for the lock
    go_on.set()
    rollout_thread.join(timeout=300)
    rollback_thread.join(timeout=300)
    assert results["rollout"].stable == V2
    assert results["rollback"].stable == V0 and results["rollback"].previous_stable == V2
    assert json.loads((stack["base"] / str(V2) / "rejected.json").read_text())["rolled_back_to"] == V0
    assert not (stack["base"] / str(V1) / "rejected.json").exists()
    assert never_promoted(LocalStore(stack["base"].parent), MODEL, V2) is not None  # a re-run cannot promote it
    assert stable_of(stack) == V0
    (stack["base"] / str(V2) / "rejected.json").unlink()


def test_a_rollback_restores_service_when_stable_cannot_load(stack, tmp_path):
    """A user trial's stable version lost files and the server restarted: a label on a version that is not
    loaded makes the server refuse every label of the model, and the rollback set 'previous' to that broken
    version, so it failed and put the broken state back. previous names only an available version."""
    from pipelines.rollout import set_versions

    config = tmp_path / "models.config"
    config.write_text("model_config_list {\n}\n")
    ServingConfigFile(config).update(MODEL, str(stack["base"]), lambda e: set_versions(e, [V1, V4], {"stable": V4}))
    port = free_port()
    server = subprocess.Popen(  # a restart: no earlier config to keep serving
        [sys.executable, "-m", "pipelines", "serve", "--model-config-file", str(config), "--port", str(port),
         "--model-config-file-poll-wait-seconds", "0.2", "--file-system-poll-wait-seconds", "0.2"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = ModelServerClient(f"http://127.0.0.1:{port}")
        deadline, states = time.monotonic() + 120, {}
        while time.monotonic() < deadline and not (states.get(V1) == "AVAILABLE" and states.get(V4) == "END"):
            time.sleep(0.3)
            with contextlib.suppress(OSError):
                states = client.version_states(MODEL)
        assert states.get(V1) == "AVAILABLE" and states.get(V4) == "END", states
        status, body = client.request("GET", f"/v1/models/{MODEL}/labels/stable")
        assert status != 200, body  # the outage: no stable
        result = rollback(client, config, model=MODEL, base_path=str(stack["base"]),
                          store=LocalStore(stack["base"].parent), target=V1, policy=POLICY, reason="broken stable")
        assert result.changed and result.stable == V1 and result.previous_stable == V4
        assert version_labels(config, MODEL) == {"stable": V1}
        status, body = client.request("GET", f"/v1/models/{MODEL}/labels/stable")
        assert status == 200 and body["model_version_status"][0]["version"] == str(V1), body
    finally:
        server.terminate()
        server.wait(timeout=30)
        (stack["base"] / str(V4) / "rejected.json").unlink(missing_ok=True)


def test_an_unexpected_exception_restores_this_models_entry_only(stack, monkeypatch):
    import pipelines.rollout

    ensure_v1_stable(stack)
    others = version_labels(stack["config"], "taxi_two")
    monkeypatch.setattr(pipelines.rollout, "run_canary", lambda *a, **k: {}["boom"])  # a KeyError mid-promotion
    with pytest.raises(RolloutError, match=r"failed at the canary check: KeyError: 'boom'\. Rolled back: stable is"):
        go(stack, V2)
    assert version_labels(stack["config"], MODEL)["stable"] == V1 and stable_of(stack) == V1
    assert version_labels(stack["config"], "taxi_two") == others


KILLED = """
import json, sys, time
import pipelines.rollout as rollout
from pipelines.config import RolloutConfig
from pipelines.serving.client import ModelServerClient

def slow_canary(*args, **kwargs):
    print("canary started", flush=True)
    time.sleep(120)

rollout.run_canary = slow_canary
url, config, base, version = sys.argv[1:5]
rollout.promote(ModelServerClient(url), config, model="taxi", base_path=base, version=int(version), canary_rows=[],
                policy=RolloutConfig(load_timeout_seconds=60, label_timeout_seconds=30))
"""


def test_a_rollout_killed_mid_promotion_leaves_the_previous_stable(stack):
    import signal

    ensure_v1_stable(stack)
    before = version_labels(stack["config"], MODEL)
    entry_before = ServingConfigFile(stack["config"]).snapshot(MODEL)
    child = subprocess.Popen([sys.executable, "-c", KILLED, stack["client"].url, str(stack["config"]),
                              str(stack["base"]), str(V3)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "canary started"  # the candidate is loaded beside stable
    loaded = version_labels(stack["config"], MODEL)
    assert ServingConfigFile(stack["config"]).snapshot(MODEL) != entry_before  # mid-promotion: the candidate added
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) == 128 + signal.SIGTERM
    assert version_labels(stack["config"], MODEL) == before == loaded
    assert ServingConfigFile(stack["config"]).snapshot(MODEL) == entry_before  # this model's entry, as it was
    assert stable_of(stack) == V1
    # SIGKILL (the OOM killer, an eviction) restores nothing: the candidate stays loaded beside stable, and a
    # request naming no label gets it (a user trial). The next promotion unloads it for good: a failed one does
    # not put it back, and a good one names it by no label
    def killed_rollout_of(version: int) -> None:
        child = subprocess.Popen([sys.executable, "-c", KILLED, stack["client"].url, str(stack["config"]),
                                  str(stack["base"]), str(version)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "canary started"
        child.kill()
        child.wait(timeout=60)
        assert version in version_states_of(stack) and version_labels(stack["config"], MODEL)["stable"] == V1

    killed_rollout_of(V2)
    with pytest.raises(RolloutError, match="failed at the canary check"):
        go(stack, V3)  # its canary fails: the config is restored, without the stray
    assert max(version_states_of(stack)) == V1 and stable_of(stack) == V1  # (older ones may stay loaded)
    newer = V2 + 7  # a good version newer than the stray
    shutil.copytree(stack["base"] / str(V2), stack["base"] / str(newer))
    try:
        killed_rollout_of(V2)
        go(stack, newer)
        assert version_labels(stack["config"], MODEL) == {"stable": newer, "previous": V1}  # not the stray
        assert V2 not in version_states_of(stack)
    finally:
        ensure_v1_stable(stack)
        shutil.rmtree(stack["base"] / str(newer))
        for record in stack["base"].glob("*/rejected.json"):
            record.unlink()


def version_states_of(stack) -> dict[int, str]:
    """The versions the server has AVAILABLE (or loading) now, once the config file's last edit is in force."""
    time.sleep(1.0)  # the server re-reads the config file every 0.2 s
    return {v: s for v, s in stack["client"].version_states(MODEL).items() if s in ("AVAILABLE", "LOADING")}


def test_default_rollbacks_never_return_to_a_rolled_back_version(stack):
    """Last in this module: it marks versions rejected."""
    ensure_v1_stable(stack)
    for record in stack["base"].glob("*/rejected.json"):  # earlier tests' rollbacks (ensure_v1_stable) marked some
        record.unlink()
    go(stack, V2)
    store = LocalStore(stack["base"].parent)

    def back():
        return rollback(stack["client"], stack["config"], model=MODEL, base_path=str(stack["base"]), store=store,
                        target=None, policy=POLICY, reason="test")

    assert back().stable == V1 and (stack["base"] / str(V2) / "rejected.json").is_file()
    assert back().stable == V0  # not V2 again: it was rolled back from
    assert json.loads((stack["base"] / str(V1) / "rejected.json").read_text())["rolled_back_to"] == V0
    with pytest.raises(RolloutError, match="no good version to roll back to before stable 2026110800"):
        back()
    assert stable_of(stack) == V0
    # a re-run of V2's interval publishes the same model again and gets V2 back: its rollout skips it
    before = stack["config"].read_text()
    again = go(stack, V2, store=store)
    assert not again.changed and again.stable == V0
    assert again.skipped_reason.startswith(f"version {V2} was rolled back from (test, ")
    assert f"target_version={V2}" in again.skipped_reason
    assert stable_of(stack) == V0 and stack["config"].read_text() == before
    # a re-run that trains it again publishes another version (its bytes may differ: approximate quantiles,
    # seeds): the same data, code and params as V2 is V2 again, and its rollout skips it too
    trained_from = {"interval": "2026-11-10", "input_digests": {"a.csv": "1" * 64}, "accepted_anomalies": [],
                    "code_version": "c0de", "params": {"epochs": 2}}
    retrained = V2 + 5  # (V3 and V4 are taken)
    shutil.copytree(stack["base"] / str(V2), stack["base"] / str(retrained), ignore=shutil.ignore_patterns("rejected.json"))
    for version in (V2, retrained):
        (stack["base"] / str(version) / "manifest.json").write_text(json.dumps({"version": version, **trained_from}))
    again = go(stack, retrained, store=store)
    assert not again.changed and stable_of(stack) == V0 and stack["config"].read_text() == before
    assert again.skipped_reason.startswith(f"version {retrained} was trained on the same data, code and params as "
                                           f"version {V2}, which was rolled back from (test, ")
    assert f"target_version={retrained}" in again.skipped_reason
    # other params are another model: promoted
    (stack["base"] / str(retrained) / "manifest.json").write_text(json.dumps(
        {"version": retrained, **trained_from, "params": {"epochs": 3}}))
    assert never_promoted(store, MODEL, retrained) is None
    shutil.rmtree(stack["base"] / str(retrained))
    # a rollback naming it is the way back
    named = rollback(stack["client"], stack["config"], model=MODEL, base_path=str(stack["base"]), store=store,
                     target=V2, policy=POLICY, reason="asked for by name")
    assert named.changed and stable_of(stack) == V2
    # a user trial: it served while marked rejected, and V0, left by rolling forward, was marked though never bad
    assert not (stack["base"] / str(V2) / "rejected.json").exists()
    restored = json.loads((stack["base"] / str(V2) / "restored.json").read_text())
    assert restored["reason"] == "asked for by name" and restored["rejection"]["reason"] == "test"
    assert not (stack["base"] / str(V0) / "rejected.json").exists()
    assert never_promoted(store, MODEL, V2) is None
    # but an older version promoted over it (allow_older) and left by naming V2 is rejected: it was bad
    older = V0 - 100
    shutil.copytree(stack["base"] / str(V0), stack["base"] / str(older))
    assert go(stack, older, allow_older=True).changed and stable_of(stack) == older
    rollback(stack["client"], stack["config"], model=MODEL, base_path=str(stack["base"]), store=store, target=V2,
             policy=POLICY, reason="older was bad")
    assert json.loads((stack["base"] / str(older) / "rejected.json").read_text())["reason"] == "older was bad"


def test_a_second_save_of_the_same_model_publishes_nothing_new(trained_run, tmp_path, taxi_config):
    """What differs between two saves of one model: fingerprint.pb's random uuid, and the transform's temp
    directory, which TensorFlow writes into the names of TFT's lookup tables (a user trial re-ran an interval and
    got a new version of byte-identical variables, which the rollout then promoted). Another vocabulary is another
    model."""
    import re

    from tensorflow.core.protobuf import fingerprint_pb2

    from pipelines.evaluate import evaluate
    from pipelines.lineage import model_digest
    from pipelines.publish import publish
    from tests.conftest import END

    art = tmp_path / "artifacts"
    shutil.copytree(trained_run["artifact_root"], art)
    for result in art.rglob("result.json"):  # the copy's steps name the copy's files (this test changes them)
        result.write_text(result.read_text().replace(str(trained_run["artifact_root"]), str(art)))
    serving = tmp_path / "serving"
    first = publish(taxi_config, interval=END, artifact_root=art, serving_root=str(serving))
    saved = Path(trained_run["evaluation"].saved_model.replace(str(trained_run["artifact_root"]), str(art)))
    assert json.loads(Path(first.path, "manifest.json").read_text())["source"] == str(saved)  # the copy
    graph = (saved / "saved_model.pb").read_bytes()
    temp_dirs = set(re.findall(rb"b'([^']*)/tftransform_tmp/", graph))
    assert len(temp_dirs) == 1, temp_dirs  # what TFT embeds today; if this changes, so must model_digest
    temp_dir = temp_dirs.pop()
    another = re.sub(rb"\.tmp-[0-9a-f]{8}", b".tmp-0123abcd", temp_dir)  # another run's (the same length: protobuf)
    assert another != temp_dir
    (saved / "saved_model.pb").write_bytes(graph.replace(temp_dir, another))
    fingerprint = fingerprint_pb2.FingerprintDef.FromString((saved / "fingerprint.pb").read_bytes())
    fingerprint.uuid = "42"
    (saved / "fingerprint.pb").write_bytes(fingerprint.SerializeToString())
    evaluate(taxi_config, interval=END, artifact_root=art, force=True)  # blesses the saved model as it is now
    again = publish(taxi_config, interval=END, artifact_root=art, serving_root=str(serving))
    assert again.reused and again.version == first.version

    vocabulary = next((saved / "assets").iterdir())  # another vocabulary: another model
    vocabulary.write_text(vocabulary.read_text().replace("\n", "-\n", 1))
    assert model_digest(saved) != first.content_digest


def test_publish_does_not_reuse_a_version_with_fewer_canary_rows_than_a_rollout_checks(trained_run, tmp_path,
                                                                                       taxi_config, caplog):
    """[rollout] canary_rows raised after a version was published: evaluate ships more rows, but the model is
    the same. Reusing the version would keep its old canary.json, and every rollout to it would refuse ("too
    few canary rows"), whatever the user re-ran. Publish takes a new number for it instead, once."""
    from pipelines.evaluate import evaluate
    from pipelines.publish import publish
    from pipelines.rollout import canary_rows_of
    from tests.conftest import END

    art = tmp_path / "artifacts"
    shutil.copytree(trained_run["artifact_root"], art)
    for result in art.rglob("result.json"):
        result.write_text(result.read_text().replace(str(trained_run["artifact_root"]), str(art)))
    serving = tmp_path / "serving"
    store = LocalStore(serving)
    first = publish(taxi_config, interval=END, artifact_root=art, serving_root=str(serving))
    shipped = len(canary_rows_of(store, MODEL, first.version))
    more = dataclasses.replace(taxi_config, rollout=dataclasses.replace(taxi_config.rollout,
                                                                        canary_rows=shipped + 20))
    evaluate(more, interval=END, artifact_root=art)  # its digest holds the canary rows: it runs again
    with caplog.at_level(logging.INFO, logger="pipelines.publish"):
        second = publish(more, interval=END, artifact_root=art, serving_root=str(serving))
    assert not second.reused and second.version == first.version + 1
    assert second.content_digest == first.content_digest  # the same model, with the rows a rollout checks
    assert len(canary_rows_of(store, MODEL, second.version)) >= shipped + 20
    assert f"version {first.version} holds this model but ships {shipped} canary rows, fewer than [rollout] " \
           f"canary_rows = {shipped + 20}" in caplog.text
    assert publish(more, interval=END, artifact_root=art, serving_root=str(serving)).version == second.version
    assert publish(taxi_config, interval=END, artifact_root=art, serving_root=str(serving)).reused  # enough rows

    # an eval split with fewer rows than canary_rows: the version ships them all, and is then reused (a review:
    # each re-run published another copy, as none could ever ship canary_rows)
    canary = Path(json.loads(Path(art, "taxi", "runs", str(END), "evaluate", "result.json").read_text())["canary"])
    canary.write_text(json.dumps(json.loads(canary.read_text())[:40]))
    small, sixty_four = tmp_path / "small", dataclasses.replace(taxi_config, rollout=dataclasses.replace(
        taxi_config.rollout, canary_rows=64))  # (evaluate ships 64 at least: its output stands)
    third = publish(sixty_four, interval=END, artifact_root=art, serving_root=str(small))
    assert len(canary_rows_of(LocalStore(small), MODEL, third.version)) == 40
    again = publish(sixty_four, interval=END, artifact_root=art, serving_root=str(small))
    assert again.reused and again.version == third.version


def test_publish_ignores_partial_versions_and_never_reuses_a_broken_one(trained_run, tmp_path, taxi_config, capsys):
    """A stray directory at the end of the day, an interrupted copy on the next number and a published version
    whose variables were truncated afterwards: publish neither counts, reuses nor overwrites any of them, and
    ``versions`` names each with its problem."""
    import argparse

    from pipelines.cli import print_versions
    from pipelines.publish import publish
    from tests.conftest import END

    art = tmp_path / "artifacts"
    shutil.copytree(trained_run["artifact_root"], art)
    serving = tmp_path / "serving"
    first = publish(taxi_config, interval=END, artifact_root=art, serving_root=str(serving))
    assert first.version == 2026111000 and not first.reused
    base = serving / MODEL
    shutil.copytree(base / str(first.version), base / "2026111099", ignore=shutil.ignore_patterns("saved_model.pb"))
    shutil.copytree(base / str(first.version), base / "2026111001", ignore=shutil.ignore_patterns("variables"))
    for data in (base / str(first.version) / "variables").glob("variables.data-*"):
        data.write_bytes(data.read_bytes()[:64])  # the one good copy is damaged after publishing

    again = publish(taxi_config, interval=END, artifact_root=art, serving_root=str(serving))
    assert not again.reused and again.version == 2026111002  # past the interrupted copy, not into it
    assert LocalStore(serving).complete_versions(MODEL) == [again.version]

    print_versions(argparse.Namespace(serving_root=str(serving), model="taxi", json=False))
    out = capsys.readouterr().out
    assert "PARTIAL 2026111099: not a complete version" in out and "no saved_model.pb" in out
    assert "PARTIAL 2026111000" in out and "its manifest.json says" in out
    assert "PARTIAL 2026111001" in out and "missing, e.g. variables/" in out


def test_a_publish_that_loses_the_race_for_a_number_takes_the_next_one(trained_run, tmp_path, taxi_config,
                                                                      monkeypatch):
    """Two publishes of one model and day pick the same free number; the one whose rename comes second gets
    FileExistsError. It must neither fail the task nor touch the winner's version: it looks again and takes
    the next number, or reuses the winner's version when that holds the same model."""
    from pipelines import publish as publish_module
    from pipelines.publish import publish
    from tests.conftest import END

    art = tmp_path / "artifacts"
    shutil.copytree(trained_run["artifact_root"], art)
    serving = tmp_path / "serving"
    base = serving / MODEL
    real_put_dir = LocalStore.put_dir
    raced: list[str] = []

    def another_publish_wins(winner_manifest: dict):
        def put_dir(self, source, *parts, last=()):
            if not raced:  # the other writer renames its copy into this number first
                raced.append(parts[-1])
                shutil.copytree(source, tmp_path / "winner")
                manifest = json.loads((tmp_path / "winner" / "manifest.json").read_text()) | winner_manifest
                (tmp_path / "winner" / "manifest.json").write_text(json.dumps(manifest))
                real_put_dir(self, tmp_path / "winner", *parts, last=last)
            return real_put_dir(self, source, *parts, last=last)
        return put_dir

    # the winner published another model (another digest): the loser takes the next number
    monkeypatch.setattr(LocalStore, "put_dir", another_publish_wins({"content_digest": "another model",
                                                                     "run_id": "the winner"}))
    result = publish(taxi_config, interval=END, artifact_root=art, serving_root=str(serving))
    assert raced == ["2026111000"] and result.version == 2026111001 and not result.reused
    winner = json.loads((base / "2026111000" / "manifest.json").read_text())
    assert winner["run_id"] == "the winner"  # untouched
    assert json.loads((base / "2026111001" / "manifest.json").read_text())["version"] == 2026111001
    assert LocalStore(serving).complete_versions(MODEL) == [2026111000, 2026111001]

    # the winner published the same model: the loser reuses its version instead of copying it again
    raced.clear()
    shutil.rmtree(serving)
    shutil.rmtree(tmp_path / "winner")
    monkeypatch.setattr(LocalStore, "put_dir", another_publish_wins({"run_id": "the winner"}))
    result = publish(taxi_config, interval=END, artifact_root=art, serving_root=str(serving))
    assert raced == ["2026111000"] and result.version == 2026111000 and result.reused
    assert LocalStore(serving).version_dirs(MODEL) == [2026111000]

    # every number taken while it writes: it gives up naming the cause, and overwrote nothing
    monkeypatch.setattr(publish_module, "PUBLISH_ATTEMPTS", 2)

    def always_taken(self, source, *parts, last=()):
        if parts[-1] == "2026111000":  # a file, not a directory: not a version, but the number is taken
            self.path(*parts).parent.mkdir(parents=True, exist_ok=True)
            self.path(*parts).write_bytes(b"someone else's")
        else:
            (self.path(*parts)).mkdir(parents=True)
            (self.path(*parts) / "saved_model.pb").write_bytes(b"someone else's")
        return real_put_dir(self, source, *parts, last=last)

    monkeypatch.setattr(LocalStore, "put_dir", always_taken)
    shutil.rmtree(serving)
    with pytest.raises(RuntimeError, match="2 version numbers for 2026-11-10 were each taken by another publish"):
        publish(taxi_config, interval=END, artifact_root=art, serving_root=str(serving))
    assert (base / "2026111000").read_bytes() == b"someone else's"
    assert (base / "2026111001" / "saved_model.pb").read_bytes() == b"someone else's"


def test_the_default_rollback_target_names_the_partial_versions_it_passed_over(tmp_path):
    """A fault trial was told there was no good version to roll back to, with the partial one it expected among
    the 'published' ones and no word of why it was passed over."""
    from pipelines.rollout import default_rollback_target

    for version in (V0, V1):
        (tmp_path / MODEL / str(version)).mkdir(parents=True)
    (tmp_path / MODEL / str(V1) / "saved_model.pb").write_bytes(b"graph")  # V0: no graph, an interrupted copy
    with pytest.raises(RolloutError, match=rf"no good version to roll back to before stable {V1} \(rejected: \[\]; "
                                           rf"partial, so not loadable: \[{V0}\]; published: \[{V0}, {V1}\]\)"):
        default_rollback_target(LocalStore(tmp_path), MODEL, V1)


def test_a_silent_server_keeps_older_versions_unlabelled_and_a_held_lock_is_a_rollout_error(tmp_path, monkeypatch):
    """Review findings: a status call that answered nothing left no older version to keep, and the old stable was
    unloaded; the lock's timeout was a bare TimeoutError, which the task did not report as the rollout's."""
    from types import SimpleNamespace

    import pipelines.rollout
    from pipelines.rollout import _available_older, _model_lock

    silent = SimpleNamespace(version_states=lambda model: {})
    assert _available_older(silent, MODEL, V2, [V0, V1, V3]) == ([], [V1, V0])
    says = SimpleNamespace(version_states=lambda model: {V2: "AVAILABLE", V1: "AVAILABLE", V0: "END"})
    assert _available_older(says, MODEL, V2, [V0, V1]) == ([V1], [])
    cfg = ServingConfigFile(tmp_path / "models.config")
    monkeypatch.setattr(pipelines.rollout, "_lock_wait", lambda policy: 0.3)
    with cfg.model_lock(MODEL, 1):  # a rollout of this model holds it
        with pytest.raises(RolloutError, match=f"another rollout or rollback of {MODEL} is still running; "
                                               "nothing changed"):
            with _model_lock(cfg, MODEL, POLICY):
                pass
    with _model_lock(cfg, MODEL, POLICY):  # free again
        pass
