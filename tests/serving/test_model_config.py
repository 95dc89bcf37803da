"""The local server's model config file: specific versions, version labels, re-reading on change."""

from __future__ import annotations

import logging
import shutil
import time

import pytest

from pipelines.serving.models import ModelManager, ServingError, parse_model_config
from tests.conftest import free_port
from tests.serving.test_rest_contract import http

pytestmark = pytest.mark.slow


def config_text(base_path, versions, labels=None) -> str:
    specific = " ".join(f"versions: {v}" for v in versions)
    label_text = "".join(f' version_labels {{ key: "{k}" value: {v} }}' for k, v in (labels or {}).items())
    return (f'model_config_list {{ config {{ name: "taxi" base_path: "{base_path}" model_platform: "tensorflow" '
            f"model_version_policy {{ specific {{ {specific} }} }}{label_text} }} }}")


@pytest.fixture(scope="module")
def base_path(trained_run, tmp_path_factory):
    base = tmp_path_factory.mktemp("models") / "taxi"
    for version in (1, 2, 3):
        shutil.copytree(trained_run["evaluation"].saved_model, base / str(version))
    return base


def states(manager) -> dict[int, str]:
    return {int(s["version"]): s["state"] for s in manager.statuses("taxi")}


def test_parse_rejects_bad_configs(tmp_path):
    with pytest.raises(ValueError, match="not a valid ModelServerConfig"):
        parse_model_config("model_config_list { config { nme: 'x' } }", "cfg")
    with pytest.raises(ValueError, match="needs a name and a base_path"):
        parse_model_config('model_config_list { config { name: "x" } }', "cfg")
    [spec] = parse_model_config(config_text("/m/taxi", [1, 2], {"stable": 1}))
    assert (spec.policy, spec.versions, spec.labels) == ("specific", (1, 2), (("stable", 1),))


def test_specific_versions_and_labels(base_path, tmp_path):
    cfg = tmp_path / "models.config"
    cfg.write_text(config_text(base_path, [1], {"stable": 1}))
    manager = ModelManager(config_file=str(cfg))
    manager.poll_once()
    assert states(manager) == {1: "AVAILABLE"}
    assert manager.servable("taxi", label="stable").number == 1

    # the candidate is loaded beside stable, then labelled in the same config
    cfg.write_text(config_text(base_path, [1, 2], {"stable": 1, "canary": 2}))
    manager.poll_once()
    assert states(manager) == {1: "AVAILABLE", 2: "AVAILABLE"}
    assert manager.servable("taxi", label="canary").number == 2
    assert manager.servable("taxi").number == 2  # no label: the highest available version

    # moving stable to 2 and dropping 1 unloads 1 only after 2 is available
    cfg.write_text(config_text(base_path, [2], {"stable": 2}))
    manager.poll_once()
    assert states(manager) == {2: "AVAILABLE", 1: "END"}
    with pytest.raises(ServingError) as err:
        manager.servable("taxi", label="canary")
    assert err.value.status == 400 and "canary" in err.value.message


def test_label_on_an_unloaded_version_is_refused(base_path, tmp_path, caplog):
    cfg = tmp_path / "models.config"
    cfg.write_text(config_text(base_path, [1], {"stable": 1}))
    manager = ModelManager(config_file=str(cfg))
    manager.poll_once()
    cfg.write_text(config_text(base_path, [1], {"stable": 3}))  # 3 exists on disk but is not loaded
    manager.poll_once()
    assert manager.servable("taxi", label="stable").number == 1
    assert "not currently available for inference" in manager.label_error
    cfg.write_text("this is not a config")
    manager.poll_once()
    assert "not a valid ModelServerConfig" in manager.config_error
    assert states(manager) == {1: "AVAILABLE"}  # the previous config stays in force
    # the file gone (a fault trial: a poll failure logged every second, and no disk polling meanwhile): the
    # previous config stays, said once; back, it is read again
    cfg.unlink()
    with caplog.at_level(logging.ERROR, logger="pipelines.serving.models"):
        for _ in range(3):
            manager.poll_once()
    assert [r.getMessage() for r in caplog.records if "cannot read the model config file" in r.getMessage()] == [
        f"cannot read the model config file, keeping the previous config: [Errno 2] No such file or directory: "
        f"'{cfg}'"]
    assert states(manager) == {1: "AVAILABLE"}
    cfg.write_text(config_text(base_path, [1], {"stable": 1}))
    manager.poll_once()
    assert manager.config_error is None and manager.servable("taxi", label="stable").number == 1
    with pytest.raises(FileNotFoundError):  # at start, a missing file is a wrong path: said at once
        ModelManager(config_file=str(tmp_path / "typo.config")).poll_once()


def test_config_file_is_re_read_by_the_running_server(base_path, tmp_path):
    from pipelines.serving.rest import ModelHTTPServer

    cfg = tmp_path / "models.config"
    cfg.write_text(config_text(base_path, [1], {"stable": 1}))
    manager = ModelManager(config_file=str(cfg), fs_poll_seconds=0.1, config_poll_seconds=0.1)
    manager.start()
    server = ModelHTTPServer(("127.0.0.1", free_port()), manager)
    server.serve_in_thread()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/models/taxi"
    try:
        assert http("GET", f"{url}/labels/stable")[1]["model_version_status"][0]["version"] == "1"
        cfg.write_text(config_text(base_path, [1, 3], {"stable": 3}))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, body = http("GET", f"{url}/labels/stable")
            if status == 200 and body["model_version_status"][0]["version"] == "3":
                break
            time.sleep(0.1)
        else:
            pytest.fail("label 'stable' never moved to version 3")
        status, body = http("GET", f"{url}/labels/nope")
        assert status == 400 and "nope" in body["error"]
    finally:
        server.shutdown()
        manager.stop()


def test_corrupt_version_reports_a_load_error_and_keeps_serving(base_path, tmp_path):
    base = tmp_path / "taxi"
    shutil.copytree(base_path / "1", base / "1")
    from pipelines.serving.models import ModelSpec

    manager = ModelManager([ModelSpec(name="taxi", base_path=str(base))])
    manager.poll_once()
    assert states(manager) == {1: "AVAILABLE"}
    shutil.copytree(base_path / "1", base / ".publishing-2")
    for variables in (base / ".publishing-2" / "variables").glob("variables.data-*"):
        variables.write_bytes(variables.read_bytes()[:100])  # truncated variables
    (base / ".publishing-2").rename(base / "2")
    manager.poll_once()
    statuses = {int(s["version"]): s for s in manager.statuses("taxi")}
    assert statuses[2]["state"] == "END" and statuses[2]["status"]["error_code"] != "OK"
    assert "Failed to load servable version 2" in statuses[2]["status"]["error_message"]
    # availability preserving: version 1 is kept, since the version meant to replace it never loaded
    assert statuses[1]["state"] == "AVAILABLE"
    assert manager.servable("taxi").number == 1


def test_a_partial_version_is_ignored_then_loads_once_complete_without_a_restart(base_path, tmp_path):
    """A version directory without saved_model.pb is not a version to the latest policy (the good one keeps
    serving); named in a config it fails to load, and once complete it is retried and loads, as TF Serving
    retries failed versions."""
    from pipelines.serving.models import ModelSpec

    base = tmp_path / "taxi"
    shutil.copytree(base_path / "1", base / "1")
    partial = base / "2"
    shutil.copytree(base_path / "1", partial, ignore=shutil.ignore_patterns("saved_model.pb"))
    latest = ModelManager([ModelSpec(name="taxi", base_path=str(base))])
    latest.poll_once()
    assert states(latest) == {1: "AVAILABLE"}
    named = ModelManager([ModelSpec(name="taxi", base_path=str(base), policy="specific", versions=(1, 2))])
    named.poll_once()
    assert states(named) == {1: "AVAILABLE", 2: "END"}
    named.poll_once()  # nothing changed: not retried at once
    assert states(named)[2] == "END"
    shutil.copy(base_path / "1" / "saved_model.pb", partial / "saved_model.pb")
    named.poll_once()
    assert states(named)[2] == "AVAILABLE"
    latest.poll_once()
    assert latest.servable("taxi").number == 2


def test_a_version_that_does_not_match_its_manifest_is_never_loaded(base_path, tmp_path):
    """The server uses the same rule as publish: a published version whose files differ from what its
    manifest lists (a shard replaced after publishing) is not loaded by the latest policy, and named in a
    config its load fails with the file named."""
    import json

    from pipelines.objectstore import manifest_files
    from pipelines.serving.models import ModelSpec

    base = tmp_path / "taxi"
    for version in ("1", "2"):
        shutil.copytree(base_path / "1", base / version)
        (base / version / "manifest.json").write_text(json.dumps({"files": manifest_files(base / version)}))
    shard = next((base / "2" / "variables").glob("variables.data-*"))
    shard.write_bytes(shard.read_bytes()[:-1] + b"\0" if shard.read_bytes()[-1:] != b"\0" else shard.read_bytes()[:-1] + b"\1")
    latest = ModelManager([ModelSpec(name="taxi", base_path=str(base))])
    latest.poll_once()
    assert states(latest) == {1: "AVAILABLE"}
    named = ModelManager([ModelSpec(name="taxi", base_path=str(base), policy="specific", versions=(2,))])
    named.poll_once()
    [status] = named.statuses("taxi")
    assert status["state"] == "END"
    assert f"not a complete version: variables/{shard.name} does not match the sha256" in status["status"]["error_message"]


def test_a_base_path_without_versions_is_logged_once_and_a_missing_one_called_a_typo(tmp_path, caplog):
    """`serve --model-base-path .work/serving/taxii` started silently; only requests said 'no versions'."""
    from pipelines.serving.models import ModelSpec

    empty = tmp_path / "taxi"
    empty.mkdir()
    manager = ModelManager([ModelSpec("taxi", str(empty)), ModelSpec("rent", str(tmp_path / "rentt"))])
    with caplog.at_level("WARNING", logger="pipelines.serving.models"):
        manager.poll_once()
        manager.poll_once()  # polled again: not logged again
    told = [r.getMessage() for r in caplog.records]
    assert told == [f"no versions of servable taxi found under base path {empty}; polling for one",
                    f"no versions of servable rent found under base path {tmp_path / 'rentt'} (no such directory: "
                    "a typo?); polling for one"], told
