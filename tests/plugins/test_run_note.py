"""The run note says what a run shipped, from its task states, results and the approval's answer."""

from __future__ import annotations

from skewfree.run_note import answer_text, summary

DONE = {"validate": "success", "transform": "success", "train": "success", "evaluate": "success",
        "is_blessed": "success", "publish": "success", "needs_approval": "success"}
EVALUATION = {"blessed": True, "metrics": {"auc": 0.8643, "examples": 100.0},
              "baseline": {"version": 2026112300, "metrics": {"auc": 0.8625}}, "reasons": []}


def test_a_promotion_names_the_version_its_metric_and_the_approval():
    results = {"evaluate": EVALUATION, "publish": {"version": 2026112400, "reused": False}}
    states = DONE | {"approve_promotion": "skipped", "rollout": "success"}
    assert summary(states, results, None) == "published 2026112400, now stable (auc 0.8643 vs 0.8625 of 2026112300)"
    approved = {"chosen": ["Approve"], "by": "alice", "at": "2026-11-25T06:00:00+00:00", "pending": False}
    assert summary(states | {"approve_promotion": "success"}, results, approved).endswith(
        ", now stable (auc 0.8643 vs 0.8625 of 2026112300), approved: Approve by alice")


def test_runs_that_promote_nothing_say_why():
    results = {"evaluate": EVALUATION, "publish": {"version": 2026112400, "reused": False}}
    rejected = {"chosen": ["Reject"], "by": "bob", "at": "2026-11-25T06:00:00+00:00", "pending": False}
    states = DONE | {"approve_promotion": "success", "rollout": "skipped"}
    assert summary(states, results, rejected) == "published 2026112400, not promoted: Reject by bob"
    timed_out = rejected | {"by": None}
    assert summary(states, results, timed_out) == \
        "published 2026112400, not promoted: Reject at the deadline (nobody answered)"
    same = results | {"rollout_skipped": "version 2026112400 already serves as stable"}
    assert summary(DONE | {"rollout": "skipped"}, same, None) == \
        "published 2026112400, not promoted: version 2026112400 already serves as stable"
    failed_rollout = DONE | {"rollout": "failed"}
    assert "rollout failed and was undone" in summary(failed_rollout, results, None)
    assert summary(failed_rollout, results | {"rollout_error": "canary mismatch on eval row 0"}, None) == (
        "published 2026112400; rollout failed and was undone: canary mismatch on eval row 0. What served before "
        "still serves")


def test_a_failed_gate_or_step_is_named_with_its_reasons():
    unblessed = {"evaluate": EVALUATION | {"blessed": False, "reasons": ["auc 0.80 is below the minimum 0.85"]}}
    states = DONE | {"is_blessed": "failed", "publish": "upstream_failed", "rollout": "upstream_failed"}
    assert summary(states, unblessed, None) == \
        "not blessed: auc 0.80 is below the minimum 0.85. Nothing published, what serves is unchanged"
    states = {"validate": "failed", "transform": "upstream_failed", "publish": "upstream_failed"}
    assert summary(states, {}, None) == \
        "failed in validate: Nothing published, what serves is unchanged (see the validate log)"
    assert summary(states, {"validate_error": "data for taxi interval 2026-11-10 failed validation: 1 problem(s)"},
                   None) == ("failed in validate: data for taxi interval 2026-11-10 failed validation: 1 problem(s). "
                             "Nothing published, what serves is unchanged (see the validate log)")
    # the kubernetes backend: the step's pod wrote its error as its XCom, which KubernetesPodOperator pushes for a
    # failed container too (the run note named no reason there)
    assert summary(states, {"validate": {"error": "data for taxi interval 2026-11-10 failed validation"}}, None) == (
        "failed in validate: data for taxi interval 2026-11-10 failed validation. Nothing published, what serves is "
        "unchanged (see the validate log)")
    assert summary(states, {"validate": ["not", "a", "result"]}, None).startswith("failed in validate: Nothing")
    evaluated_only = DONE | {"publish": "skipped", "rollout": "skipped"}
    assert summary(evaluated_only, {"evaluate": EVALUATION}, None).endswith("not published (publish=false)")


def test_a_rollback_says_which_version_serves_now():
    done = {"rollback": {"stable": 2026112300, "previous_stable": 2026112400}}
    assert summary({"rollback": "success"}, done, None) == "rolled back: 2026112300 now stable (was 2026112400)"
    assert summary({"rollback": "failed"}, {}, None).startswith("rollback failed: what served before still serves")
    # the reason the rollback task gave (a user trial found it only in the task log)
    nothing = "taxi has no good version to roll back to before stable 2026120500"
    assert summary({"rollback": "failed"}, {"rollback_error": nothing}, None) == (
        f"rollback failed: {nothing}. What served before still serves (see the rollback log)")


def test_an_unanswered_request_reads_as_waiting():
    assert answer_text(None) == "not asked"
    assert answer_text({"chosen": [], "by": None, "at": None, "pending": True}) == "waiting for an answer"


def test_a_run_run_again_gets_a_new_note_but_a_persons_note_stays(monkeypatch):
    """A user trial cleared a backfill run and ran it again: it published another version and made it stable, but
    the note still said its first finish ('not promoted'). The listener's own note (no user) is now replaced; one a
    person wrote (the UI and the REST API record the user) stays."""
    from types import SimpleNamespace

    from airflow.models.dagrun import DagRunNote

    from skewfree import run_note

    monkeypatch.setattr(run_note, "run_summary", lambda dag_run, session: "published 2026120501, now stable")

    class Session:
        def __init__(self, existing):
            self.existing, self.added = existing, []

        def get(self, model, key):
            assert model is DagRunNote and key == 7
            return self.existing

        def add(self, row):
            self.added.append(row)

    run = SimpleNamespace(id=7, note=None)
    first = Session(None)
    run_note._annotate(run, first, bound=False)
    assert [(row.content, row.dag_run_id, row.user_id) for row in first.added] == [
        ("published 2026120501, now stable", 7, None)]
    ours = DagRunNote(content="published 2026120500, not promoted: version 2026120500 was trained on older data")
    run_note._annotate(run, Session(ours), bound=False)
    assert ours.content == "published 2026120501, now stable"
    run_note._annotate(run, Session(DagRunNote(content="old", user_id=None)), bound=True)
    assert run.note == "published 2026120501, now stable"  # the scheduler's session: through the DagRun
    theirs = DagRunNote(content="bad data on the 5th, see INC-12", user_id="alice")
    bound_run = SimpleNamespace(id=7, note="bad data on the 5th, see INC-12")
    for bound in (False, True):
        run_note._annotate(bound_run, Session(theirs), bound=bound)
        assert theirs.content == bound_run.note == "bad data on the 5th, see INC-12"
