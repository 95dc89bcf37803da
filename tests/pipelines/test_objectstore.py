"""Roots on S3 (a moto server on 127.0.0.1) and local roots behave alike where publish and serving need them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.objectstore import LocalStore, Mirror, S3Store, open_store, split_s3


def make_version(tmp_path: Path) -> Path:
    src = tmp_path / "build"
    (src / "variables").mkdir(parents=True)
    (src / "variables" / "variables.index").write_bytes(b"index")
    (src / "variables" / "variables.data-00000-of-00001").write_bytes(b"x" * 10_000)
    (src / "manifest.json").write_text(json.dumps({"version": 1}))
    (src / "saved_model.pb").write_bytes(b"graph")
    return src


def record_puts(client) -> list[str]:
    keys: list[str] = []
    client.meta.events.register("before-parameter-build.s3.PutObject", lambda params, **_: keys.append(params["Key"]))
    return keys


@pytest.mark.parametrize("bad", ["gs://b/x", "s3://", "s3:///x", "s3://b/../x", "s3://b/./x"])
def test_bad_s3_urls_are_refused_with_the_url(bad):
    with pytest.raises(ValueError, match="s3"):
        split_s3(bad)


def test_s3_put_dir_uploads_saved_model_last_and_never_overwrites(s3, tmp_path):
    store = S3Store(s3["url"] + "/serving", s3["client"])
    puts = record_puts(s3["client"])
    store.put_dir(make_version(tmp_path), "taxi", "1", last="saved_model.pb")

    assert puts[-1].endswith("taxi/1/saved_model.pb")
    assert len(puts) == 4
    assert store.version_dirs("taxi") == [1]
    assert store.read_json("taxi", "1", "manifest.json") == {"version": 1}
    with pytest.raises(FileExistsError, match="never overwritten"):
        store.put_dir(make_version(tmp_path / "again"), "taxi", "1", last="saved_model.pb")
    assert store.read_bytes("taxi", "1", "saved_model.pb") == b"graph"


def test_s3_exclusive_put_refuses_an_existing_object(s3):
    # the If-None-Match guard, which also stops a concurrent publisher racing past the existence check
    store = S3Store(s3["url"], s3["client"])
    store.put_bytes(b"first", "taxi", "7", "saved_model.pb", exclusive=True)
    with pytest.raises(FileExistsError):
        store.put_bytes(b"second", "taxi", "7", "saved_model.pb", exclusive=True)
    assert store.read_bytes("taxi", "7", "saved_model.pb") == b"first"


def test_a_failed_s3_upload_leaves_no_trace_of_the_version(s3, tmp_path):
    store = S3Store(s3["url"] + "/serving", s3["client"])
    calls = []

    def fail_third(params, **_):
        calls.append(params["Key"])
        if len(calls) == 3:
            raise ConnectionError("network dropped")

    s3["client"].meta.events.register("before-parameter-build.s3.PutObject", fail_third)
    with pytest.raises(ConnectionError):
        store.put_dir(make_version(tmp_path), "taxi", "1", last="saved_model.pb")
    assert store.objects("taxi") == {}
    assert store.version_dirs("taxi") == []


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_local_and_s3_stores_agree(kind, s3, tmp_path):
    store = open_store(tmp_path / "root") if kind == "local" else open_store(s3["url"] + "/root", s3["client"])
    assert isinstance(store, LocalStore if kind == "local" else S3Store)
    assert store.version_dirs("taxi") == [] and store.read_json("taxi", "2", "manifest.json") is None
    for version in ("2", "10"):
        store.put_dir(make_version(tmp_path / version), "taxi", version, last="saved_model.pb")
    assert store.version_dirs("taxi") == [2, 10]
    assert store.exists("taxi", "10") and not store.exists("taxi", "3")
    assert store.read_bytes("taxi", "2", "variables", "variables.index") == b"index"
    with pytest.raises(FileExistsError):
        store.put_dir(make_version(tmp_path / "again"), "taxi", "2", last="saved_model.pb")


def test_mirror_push_writes_the_marker_last_and_prunes(s3, tmp_path):
    mirror = Mirror(tmp_path / "staging", s3["client"])
    out = mirror.local(s3["url"] + "/runs/2026-11-10/train")
    (out / "saved_model").mkdir(parents=True)
    (out / "saved_model" / "saved_model.pb").write_bytes(b"v1")
    (out / "old.txt").write_text("stale soon")
    (out / "result.json").write_text("{}")
    mirror.push(out, last="result.json", prune=True)

    (out / "old.txt").unlink()
    (out / "saved_model" / "saved_model.pb").write_bytes(b"v2")
    puts = record_puts(s3["client"])
    mirror.push(out, last="result.json", prune=True)
    assert puts[-1].endswith("train/result.json")
    remote = S3Store(s3["url"] + "/runs/2026-11-10/train", s3["client"])
    assert sorted(remote.objects()) == ["result.json", "saved_model/saved_model.pb"]
    assert remote.read_bytes("saved_model", "saved_model.pb") == b"v2"


def test_mirror_pull_makes_the_local_copy_equal_and_maps_paths_both_ways(s3, tmp_path):
    store = S3Store(s3["url"] + "/a", s3["client"])
    store.put_bytes(b"one", "x", "1.txt")
    store.put_bytes(b"two", "x", "sub", "2.txt")
    mirror = Mirror(tmp_path / "staging", s3["client"])
    local = mirror.local(s3["url"] + "/a/x")
    (local / "gone.txt").parent.mkdir(parents=True)
    (local / "gone.txt").write_text("not on S3")
    assert mirror.pull(s3["url"] + "/a/x") == local
    assert sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()) == ["1.txt", "sub/2.txt"]
    assert mirror.pull(s3["url"] + "/a/x/1.txt").read_bytes() == b"one"  # a single object

    result = {"files": [str(local / "1.txt")], "digests": {str(local / "sub/2.txt"): "d"}, "other": "/elsewhere"}
    as_urls = mirror.to_urls(result)
    assert as_urls == {"files": [s3["url"] + "/a/x/1.txt"], "digests": {s3["url"] + "/a/x/sub/2.txt": "d"},
                       "other": "/elsewhere"}
    assert mirror.to_local(as_urls) == result
    assert mirror.url(tmp_path / "unrelated") is None


def test_model_server_lists_only_complete_versions_on_s3(s3, tmp_path):
    from pipelines.serving.models import version_dirs

    store = S3Store(s3["url"] + "/serving", s3["client"])
    store.put_dir(make_version(tmp_path), "taxi", "5", last="saved_model.pb")
    store.put_bytes(b"half", "taxi", "6", "variables", "variables.index")  # an upload still under way
    assert store.version_dirs("taxi") == [5, 6]
    assert version_dirs(s3["url"] + "/serving/taxi") == [5]


def test_only_the_chief_worker_pushes_train_output(s3, taxi_config):
    """A multi-worker job's other workers export to scratch; their step must upload nothing."""
    from pipelines.runs import Run
    from pipelines.staging import Staging
    from tests.conftest import END

    staging = Staging({"artifact": s3["url"] + "/artifacts"})
    try:
        local = staging.local_roots({"artifact": s3["url"] + "/artifacts"})["artifact"]
        out = Run(Path(local), taxi_config.name, END).step_dir("train")
        (out / "saved_model").mkdir(parents=True)
        (out / "saved_model" / "saved_model.pb").write_bytes(b"graph")
        (out / "result.json").write_text("{}")
        staging.push("train", taxi_config, {"chief": False}, interval=END, roots={"artifact": local})
        assert not S3Store(s3["url"], s3["client"]).objects()
        staging.push("train", taxi_config, {"chief": True}, interval=END, roots={"artifact": local})
        assert sorted(S3Store(s3["url"], s3["client"]).objects()) == [
            "artifacts/taxi/runs/2026-11-10/train/result.json",
            "artifacts/taxi/runs/2026-11-10/train/saved_model/saved_model.pb"]
    finally:
        staging.close()
