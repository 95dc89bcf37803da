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
    store.put_dir(make_version(tmp_path), "taxi", "1", last=("saved_model.pb", "manifest.json"))

    # the graph after the variables, the manifest (which lists every file) after the graph
    assert puts[-2].endswith("taxi/1/saved_model.pb") and puts[-1].endswith("taxi/1/manifest.json")
    assert len(puts) == 4
    assert store.version_dirs("taxi") == [1]
    assert store.read_json("taxi", "1", "manifest.json") == {"version": 1}
    with pytest.raises(FileExistsError, match="never overwritten"):
        store.put_dir(make_version(tmp_path / "again"), "taxi", "1", last=("saved_model.pb", "manifest.json"))
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
        store.put_dir(make_version(tmp_path), "taxi", "1", last=("saved_model.pb", "manifest.json"))
    assert store.objects("taxi") == {}
    assert store.version_dirs("taxi") == []


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_local_and_s3_stores_agree(kind, s3, tmp_path):
    store = open_store(tmp_path / "root") if kind == "local" else open_store(s3["url"] + "/root", s3["client"])
    assert isinstance(store, LocalStore if kind == "local" else S3Store)
    assert store.version_dirs("taxi") == [] and store.read_json("taxi", "2", "manifest.json") is None
    for version in ("2", "10"):
        store.put_dir(make_version(tmp_path / version), "taxi", version, last=("saved_model.pb", "manifest.json"))
    assert store.version_dirs("taxi") == [2, 10]
    assert store.exists("taxi", "10") and not store.exists("taxi", "3")
    assert store.read_bytes("taxi", "2", "variables", "variables.index") == b"index"
    with pytest.raises(FileExistsError):
        store.put_dir(make_version(tmp_path / "again"), "taxi", "2", last=("saved_model.pb", "manifest.json"))
    store.put_bytes(b"{}", "taxi", "2", "rejected.json")
    store.remove("taxi", "2", "rejected.json")
    store.remove("taxi", "2", "rejected.json")  # absent: nothing to do
    assert store.read_bytes("taxi", "2", "rejected.json") is None and store.exists("taxi", "2", "manifest.json")


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
    # the S3 console's "Create folder" leaves an empty object named like a folder: it is no file (it crashed pull)
    s3["client"].put_object(Bucket=store.bucket, Key=store.key("x") + "/", Body=b"")
    s3["client"].put_object(Bucket=store.bucket, Key=store.key("x", "sub") + "/", Body=b"")
    s3["client"].put_object(Bucket=store.bucket, Key=store.key("empty") + "/", Body=b"")
    assert sorted(S3Store(s3["url"] + "/a/x", s3["client"]).objects()) == ["1.txt", "sub/2.txt"]
    assert mirror.pull(s3["url"] + "/a/x") == local
    assert sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()) == ["1.txt", "sub/2.txt"]
    assert not mirror.pull(s3["url"] + "/a/empty").exists()  # a day with only a marker: a missing partition

    result = {"files": [str(local / "1.txt")], "digests": {str(local / "sub/2.txt"): "d"}, "other": "/elsewhere"}
    as_urls = mirror.to_urls(result)
    assert as_urls == {"files": [s3["url"] + "/a/x/1.txt"], "digests": {s3["url"] + "/a/x/sub/2.txt": "d"},
                       "other": "/elsewhere"}
    assert mirror.to_local(as_urls) == result
    assert mirror.url(tmp_path / "unrelated") is None


def test_model_server_lists_only_complete_versions_on_s3(s3, tmp_path):
    from pipelines.serving.models import version_dirs

    store = S3Store(s3["url"] + "/serving", s3["client"])
    store.put_dir(make_version(tmp_path), "taxi", "5", last=("saved_model.pb", "manifest.json"))
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


def publishable(tmp_path: Path) -> Path:
    """A version directory as publish builds it: the manifest lists every file with its size and sha256."""
    from pipelines.objectstore import manifest_files

    src = make_version(tmp_path)
    (src / "manifest.json").write_text(json.dumps({"version": 1, "files": manifest_files(src)}))
    return src


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_one_rule_for_a_complete_version(kind, s3, tmp_path):
    """saved_model.pb present and every file the manifest lists there with its size (and, locally, its
    sha256); each way of being partial is named, ignored by complete_versions, reported by partial_versions."""
    store = open_store(tmp_path / "root") if kind == "local" else open_store(s3["url"] + "/root", s3["client"])
    for version in ("1", "2", "3", "4"):
        store.put_dir(publishable(tmp_path / version), "taxi", version, last=("saved_model.pb", "manifest.json"))
    # 2: an interrupted copy (no graph); 3: a variables shard of another size; 4: a listed file gone
    # 5: a SavedModel copied in by hand, no manifest: complete once its graph and variables are there, as TF
    # Serving needs them; 6, 7: without the variables' index (a user trial removed a version's manifest and its
    # index: a rollback served it, and the server could not load it again), or with a data shard missing
    files = {"saved_model.pb": b"graph", "variables/variables.index": b"index",
             "variables/variables.data-00000-of-00002": b"a", "variables/variables.data-00001-of-00002": b"b"}
    copies = {"5": files, "6": {k: v for k, v in files.items() if k != "variables/variables.index"},
              "7": {k: v for k, v in files.items() if not k.endswith("00001-of-00002")}}
    if kind == "local":
        root = tmp_path / "root" / "taxi"
        (root / "2" / "saved_model.pb").unlink()
        (root / "3" / "variables" / "variables.data-00000-of-00001").write_bytes(b"y" * 9_999)
        (root / "4" / "variables" / "variables.index").unlink()
    else:
        store.delete([store.key("taxi", "2", "saved_model.pb"), store.key("taxi", "4", "variables", "variables.index")])
        store.put_bytes(b"y" * 9_999, "taxi", "3", "variables", "variables.data-00000-of-00001")
    for version, copied in copies.items():
        for rel, payload in copied.items():
            store.put_bytes(payload, "taxi", version, *rel.split("/"))
    assert store.complete_versions("taxi") == [1, 5]
    partial = store.partial_versions("taxi")
    assert sorted(partial) == [2, 3, 4, 6, 7]
    assert "no saved_model.pb" in partial[2]
    assert "variables/variables.data-00000-of-00001 has 9999 bytes, its manifest.json says 10000" in partial[3]
    assert "missing, e.g. variables/variables.index" in partial[4]
    assert partial[6] == "no manifest.json and no variables/variables.index (an interrupted copy, or files removed)"
    assert "its variables' data shards are not one complete set: ['variables/variables.data-00000-of-00002']" \
        in partial[7]


def test_a_local_file_changed_in_place_fails_its_digest(tmp_path):
    store = LocalStore(tmp_path / "root")
    store.put_dir(publishable(tmp_path), "taxi", "1", last=("saved_model.pb", "manifest.json"))
    assert store.complete_versions("taxi") == [1]
    (tmp_path / "root" / "taxi" / "1" / "saved_model.pb").write_bytes(b"GRAPH")  # same size, other bytes
    assert "saved_model.pb does not match the sha256" in store.partial_versions("taxi")[1]
    (tmp_path / "root" / "taxi" / "1" / "manifest.json").write_text("{not json")
    assert "manifest.json is not JSON" in store.version_problem("taxi", "1")


def test_publish_numbers_past_partial_directories_and_never_reuses_them(tmp_path):
    from pipelines.publish import next_version

    day = range(2026111000, 2026111100)
    # a stray partial directory at the end of the day does not make the day full
    assert next_version(day, complete=[2026111000], taken=[2026111000, 2026111099]) == 2026111001
    # a partial directory on the next number is skipped, never written into
    assert next_version(day, complete=[2026111000], taken=[2026111000, 2026111001]) == 2026111002
    assert next_version(day, complete=[], taken=[]) == 2026111000
    assert next_version(day, complete=[2026111099], taken=[2026111099]) is None


def test_mirror_push_prunes_before_the_marker_and_fails_on_a_failed_delete(s3, tmp_path, monkeypatch):
    mirror = Mirror(tmp_path / "staging", s3["client"])
    out = mirror.local(s3["url"] + "/runs/2026-11-10/transform")
    out.mkdir(parents=True)
    for name in ("part-0.tfrecord", "part-1.tfrecord", "result.json"):
        (out / name).write_text(name)
    mirror.push(out, last="result.json", prune=True)
    (out / "part-1.tfrecord").unlink()  # the new output has one shard

    calls = []
    s3["client"].meta.events.register("before-parameter-build.s3.PutObject",
                                      lambda params, **_: calls.append(("put", params["Key"])))
    s3["client"].meta.events.register("before-parameter-build.s3.DeleteObjects",
                                      lambda params, **_: calls.append(("delete", params["Delete"]["Objects"])))
    mirror.push(out, last="result.json", prune=True)
    stale = [i for i, c in enumerate(calls) if c[0] == "delete" and any("part-1" in o["Key"] for o in c[1])]
    marker = [i for i, c in enumerate(calls) if c[0] == "put" and c[1].endswith("transform/result.json")]
    assert stale and marker and stale[0] < marker[-1], calls

    # a delete S3 refuses fails the push, and no marker stands over the mix
    (out / "part-0.tfrecord").unlink()
    (out / "part-2.tfrecord").write_text("new")

    def refuse(**kwargs):
        return {"Errors": [{"Key": kwargs["Delete"]["Objects"][-1]["Key"], "Code": "AccessDenied",
                            "Message": "Access Denied"}]}

    real = s3["client"].delete_objects
    monkeypatch.setattr(s3["client"], "delete_objects",
                        lambda **kw: refuse(**kw) if any("part-0" in o["Key"] for o in kw["Delete"]["Objects"])
                        else real(**kw))
    with pytest.raises(OSError, match="could not delete 1 object.*part-0.tfrecord: AccessDenied"):
        mirror.push(out, last="result.json", prune=True)
    remote = S3Store(s3["url"] + "/runs/2026-11-10/transform", s3["client"])
    assert "result.json" not in remote.objects()


def test_leftovers_of_killed_writers_are_swept_once_stale(tmp_path, monkeypatch):
    """A SIGKILLed staged_dir or publish leaves hidden temporaries no reader looks at: the next step or
    publish removes those untouched for LEFTOVER_AGE_SECONDS (a day; 1 s here), never a live writer's
    (written since) and nothing else."""
    import time

    from pipelines import storage
    from pipelines.storage import sweep_leftovers

    monkeypatch.setattr(storage, "LEFTOVER_AGE_SECONDS", 1.0)
    model_dir = tmp_path / "serving" / "taxi"
    stale = model_dir / ".publishing-2026111000-1a2b3c4d"
    run_dir = tmp_path / "runs" / "2026-11-10"
    stale_step, stale_file = run_dir / ".train.tmp-0badc0de", run_dir / ".result.json.tmp-deadbeef"
    for directory in (stale / "variables", stale_step, model_dir / "2026110900", model_dir / ".hidden"):
        directory.mkdir(parents=True)
    (stale / "variables" / "variables.index").write_bytes(b"x")
    stale_file.write_text("{")
    time.sleep(1.5)
    live = model_dir / ".publishing-2026111001-5e6f7a8b"  # a publish still copying
    live.mkdir()
    store = LocalStore(tmp_path / "serving")
    store.put_dir(publishable(tmp_path / "src"), "taxi", "2026111002", last=("saved_model.pb", "manifest.json"))
    assert sorted(p.name for p in model_dir.iterdir()) == [
        ".hidden", ".publishing-2026111001-5e6f7a8b", "2026110900", "2026111002"]
    assert sorted(p.name for p in sweep_leftovers(run_dir)) == [".result.json.tmp-deadbeef", ".train.tmp-0badc0de"]
    assert list(run_dir.iterdir()) == []


def test_a_local_publish_that_loses_the_rename_race_gets_file_exists_and_leaves_the_winner(tmp_path, monkeypatch):
    """Both writers passed the existence check; the second rename meets the winner's non-empty directory
    (ENOTEMPTY): FileExistsError, so publish takes the next number; its copy is removed, the winner's kept."""
    import shutil

    from pipelines import objectstore

    store = LocalStore(tmp_path / "root")
    real_copytree = shutil.copytree

    def copy_then_lose(source, target, *args, **kwargs):
        result = real_copytree(source, target, *args, **kwargs)
        winner = store.path("taxi", "1")  # the other writer renames its copy in meanwhile
        winner.mkdir(parents=True)
        (winner / "saved_model.pb").write_bytes(b"the winner's")
        return result

    monkeypatch.setattr(objectstore.shutil, "copytree", copy_then_lose)
    with pytest.raises(FileExistsError, match="never overwritten"):
        store.put_dir(make_version(tmp_path), "taxi", "1")
    assert store.read_bytes("taxi", "1", "saved_model.pb") == b"the winner's"
    assert sorted(p.name for p in store.path("taxi").iterdir()) == ["1"]  # no hidden copy left behind


def test_s3_exists_is_not_hidden_by_sibling_prefixes(s3):
    store = S3Store(s3["url"] + "/serving", s3["client"])
    for key in ("1-x/a", "1.bak/b", "1.old/c"):  # sort before "1/" in a listing
        store.put_bytes(b"x", "taxi", *key.split("/"))
    assert not store.exists("taxi", "1")
    store.put_bytes(b"graph", "taxi", "1", "saved_model.pb")
    assert store.exists("taxi", "1")
    store.put_bytes(b"a file, not a directory", "taxi", "2")
    assert store.exists("taxi", "2") and not store.exists("taxi", "3")


def test_s3_put_dir_survives_its_own_retried_put_and_stops_at_a_rivals_object(s3, tmp_path, monkeypatch):
    """botocore retries a PUT whose answer was lost; if the first try had landed, the retry gets 412. That
    object is this upload's own (same bytes): the upload goes on and the version is complete, not a lone
    saved_model.pb. An object a rival wrote there (other bytes) stops the upload, which then removes only its
    own objects."""
    store = S3Store(s3["url"] + "/serving", s3["client"])
    real_put = S3Store.put_bytes

    def answer_lost_once(self, payload, *parts, exclusive=False):
        real_put(self, payload, *parts, exclusive=exclusive)
        if parts[-1] == "saved_model.pb":
            real_put(self, payload, *parts, exclusive=exclusive)  # the retry: 412 -> FileExistsError

    monkeypatch.setattr(S3Store, "put_bytes", answer_lost_once)
    store.put_dir(make_version(tmp_path), "taxi", "1", last=("saved_model.pb", "manifest.json"))
    assert store.version_problem("taxi", "1") is None
    assert set(store.files("taxi", "1")) == {"variables/variables.index", "variables/variables.data-00000-of-00001",
                                             "manifest.json", "saved_model.pb"}

    def rival_first(self, payload, *parts, exclusive=False):
        if parts[-1] == "saved_model.pb":
            real_put(self, b"the rival's graph", *parts)
        real_put(self, payload, *parts, exclusive=exclusive)

    monkeypatch.setattr(S3Store, "put_bytes", rival_first)
    with pytest.raises(FileExistsError):
        store.put_dir(make_version(tmp_path / "two"), "taxi", "2", last=("saved_model.pb", "manifest.json"))
    assert store.files("taxi", "2") == {"saved_model.pb": len(b"the rival's graph")}


def test_a_data_root_on_s3_beside_a_local_artifact_root(s3, small_data, tmp_path, capsys):
    """A user trial: validate recorded the partitions as paths in its mirror, which is gone when the step ends,
    and transform then failed with 'No such file or directory: /tmp/skewfree-step-.../part-00000.csv'. Results
    name the S3 objects; a later step reads them from its own mirror."""
    from pipelines.cli import main
    from pipelines.runs import Run
    from tests.conftest import END

    for path in sorted(small_data.rglob("*.csv")):
        s3["client"].upload_file(str(path), s3["bucket"], f"raw/{path.relative_to(small_data).as_posix()}")
    art = tmp_path / "artifacts"
    run = ["--model", "taxi", "--interval", END.isoformat(), "--artifact-root", str(art)]
    assert main(["validate", *run, "--data-root", f"{s3['url']}/raw"]) == 0, capsys.readouterr().out
    assert main(["transform", *run]) == 0, capsys.readouterr().out
    validation = Run(art, "taxi", END).read_result("validate")
    assert validation["partitions"] and all(f.startswith(f"{s3['url']}/raw/taxi_trips/")
                                            for files in validation["partitions"].values() for f in files)
    assert all(key.startswith(s3["url"]) for key in validation["file_digests"])
    transformed = Run(art, "taxi", END).read_result("transform")
    assert transformed["rows"]["train"] > 0 and str(art) in transformed["transform_fn"]
    assert not list((tmp_path / "staging").iterdir())  # every step's mirror is gone
    # a refused validate's report names the S3 objects too (nothing pushes it)
    newest = sorted(small_data.rglob("*.csv"))[-1]
    lines = newest.read_text().splitlines(keepends=True)
    lines[3] = "abc" + lines[3][lines[3].index(","):]
    s3["client"].put_object(Bucket=s3["bucket"], Key=f"raw/{newest.relative_to(small_data).as_posix()}",
                            Body="".join(lines).encode())
    assert main(["validate", *run, "--data-root", f"{s3['url']}/raw"]) != 0
    report = json.loads((Run(art, "taxi", END).step_dir("validate") / "rejected" / "validation.json").read_text())
    [wrong] = [a for a in report["anomalies"] if a["kind"] == "wrong_type"]
    assert wrong["file"].startswith(f"{s3['url']}/raw/") and all(
        f.startswith(s3["url"]) for files in report["partitions"].values() for f in files)


def test_publish_does_not_download_the_data_window_it_only_records(s3, tmp_path, monkeypatch, taxi_config):
    """validate's result names the data on S3; transform needs those files, publish only their digests (a review
    finding: publish pulled the whole window)."""
    from pipelines.runs import Run
    from pipelines.staging import Staging
    from pipelines.storage import write_json
    from tests.conftest import END

    s3["client"].put_object(Bucket=s3["bucket"], Key="raw/x.csv", Body=b"a\n1\n")
    run = Run(tmp_path / "art", "taxi", END)
    write_json(run.result_path("validate"), {"partitions": {"d": [f"{s3['url']}/raw/x.csv"]}})
    pulled = []
    monkeypatch.setattr(Mirror, "pull", lambda self, url: pulled.append(url))
    for step, wanted in (("publish", []), ("transform", [f"{s3['url']}/raw/x.csv"])):
        pulled.clear()
        staging = Staging({"artifact": str(tmp_path / "art")})
        try:
            staging.pull(step, taxi_config, interval=END, roots={"artifact": str(tmp_path / "art")})
            assert pulled == wanted and (staging.mirror is None) == (not wanted), step
        finally:
            staging.close()
