"""Archive: SQLite rows + git commits in a real run directory."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from archive import Archive, ArchiveLocked, Node, NodeStatus, NotARunDir
from archive.repo import EMPTY_TREE, node_ref
from archive.node import what_broke
from archive.store import NodeStore

ROOT = Path(__file__).resolve().parents[1]


def git(run_dir: Path, *args: str) -> str:
    return subprocess.run(
        ["git", f"--git-dir={run_dir / 'repo.git'}", *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def write_agent(d: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return d


@pytest.fixture
def arc(tmp_path):
    a = Archive.create(tmp_path / "run", "cp")
    yield a
    a.close()


@pytest.fixture
def seeded(arc, tmp_path):
    src = write_agent(tmp_path / "seed", {"main.py": "x = 1\n", "lib/util.py": "def f():\n    return 1\n"})
    arc.add_node(parent_id=None, status=NodeStatus.ADMITTED, operator="seed", src_dir=src, message="seed", score=0.5)
    return arc


# ---- lineage and git parentage ----------------------------------------------------------


def test_seed_children_lineage_and_git_parentage(arc, tmp_path):
    src = write_agent(
        tmp_path / "seed",
        {"main.py": "x = 1\n", "lib/util.py": "u\n", "__pycache__/main.cpython-311.pyc": "junk", "lib/old.pyc": "j"},
    )
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    os.symlink("/etc/passwd", src / "link")
    seed = arc.add_node(parent_id=None, status="admitted", operator="seed", src_dir=src, message="seed")
    child = arc.add_node(
        parent_id=0, status="proposed", operator="rewrite", files={"main.py": "x = 2\n", "lib/util.py": b"u\n"}, message="c"
    )
    src2 = write_agent(tmp_path / "gc", {"main.py": "x = 3\n"})
    grandchild = arc.add_node(parent_id=child.id, status="proposed", operator="diff", src_dir=src2, message="g")

    assert (seed.id, child.id, grandchild.id) == (0, 1, 2)
    assert [n.id for n in arc.lineage(2)] == [0, 1, 2]
    assert [n.id for n in arc.lineage(0)] == [0]
    assert arc.read_files(0) == {"main.py": b"x = 1\n", "lib/util.py": b"u\n", "run.sh": b"#!/bin/sh\n"}
    assert arc.read_files(1) == {"main.py": b"x = 2\n", "lib/util.py": b"u\n"}
    assert arc.read_files(2) == {"main.py": b"x = 3\n"}
    # real git agrees: refs, first parents, the seed is a root commit
    for n in (seed, child, grandchild):
        assert git(arc.run_dir, "rev-parse", node_ref(n.id)) == n.commit
    assert git(arc.run_dir, "rev-parse", f"{node_ref(2)}^") == child.commit
    assert git(arc.run_dir, "rev-parse", f"{node_ref(1)}^") == seed.commit
    assert git(arc.run_dir, "rev-list", "--parents", "-n1", seed.commit) == seed.commit
    assert git(arc.run_dir, "ls-tree", "-r", "--name-only", seed.commit).split() == ["lib/util.py", "main.py", "run.sh"]
    assert "100755 blob" in git(arc.run_dir, "ls-tree", seed.commit, "run.sh")
    assert "dgm-node: 2\ndgm-parent: 1\ndgm-operator: diff" in git(arc.run_dir, "log", "-1", "--format=%B", grandchild.commit)
    assert git(arc.run_dir, "log", "-1", "--format=%an <%ae>|%cn <%ce>", seed.commit) == "dgm <dgm@localhost>|dgm <dgm@localhost>"
    subprocess.run(["git", f"--git-dir={arc.run_dir / 'repo.git'}", "fsck", "--strict"], check=True, capture_output=True)

    dest = arc.materialize(0, tmp_path / "out")
    assert (dest / "lib" / "util.py").read_bytes() == b"u\n"
    assert os.access(dest / "run.sh", os.X_OK) and not os.access(dest / "main.py", os.X_OK)
    with pytest.raises(FileExistsError, match="not empty"):
        arc.materialize(1, dest)
    assert arc.check() == []


def test_failed_attempt_gets_empty_child_commit(seeded):
    failed = seeded.add_node(parent_id=0, status="failed", operator="diff", message="fm error", error="timeout")
    parent = seeded.get(0)
    assert failed.commit != parent.commit
    assert seeded.repo.parents(failed.commit) == [parent.commit]
    assert seeded.repo.tree_of(failed.commit) == seeded.repo.tree_of(parent.commit)
    assert seeded.diff(failed.id) == ""
    assert seeded.get(failed.id).status is NodeStatus.FAILED and seeded.get(failed.id).error == "timeout"
    assert seeded.check() == []


def test_empty_seed_has_empty_tree(arc):
    seed = arc.add_node(parent_id=None, status="failed", operator="seed", message="no code")
    assert arc.repo.tree_of(seed.commit) == EMPTY_TREE
    assert arc.repo.parents(seed.commit) == []
    assert arc.read_files(0) == {}


def test_add_node_argument_errors(seeded, tmp_path):
    with pytest.raises(ValueError, match="already has a seed"):
        seeded.add_node(parent_id=None, status="admitted", operator="seed", message="s2")
    with pytest.raises(KeyError, match="no node 7"):
        seeded.add_node(parent_id=7, status="proposed", operator="diff", message="m")
    with pytest.raises(ValueError, match="not both"):
        seeded.add_node(parent_id=0, status="proposed", operator="d", src_dir=tmp_path, files={}, message="m")
    with pytest.raises(ValueError, match="assigns"):
        seeded.add_node(parent_id=0, status="proposed", operator="d", message="m", commit="abc")
    with pytest.raises(ValueError):
        seeded.add_node(parent_id=0, status="bogus", operator="d", message="m")
    for bad in ("../x.py", "/etc/x", "a/../b", ".git/config", "a//b", ""):
        with pytest.raises(ValueError, match="invalid file path"):
            seeded.add_node(parent_id=0, status="proposed", operator="d", files={bad: "x"}, message="m")
    with pytest.raises(ValueError, match="path conflict"):
        seeded.add_node(parent_id=0, status="proposed", operator="d", files={"a": "1", "a/b": "2"}, message="m")
    # nothing half-written by the failures
    assert seeded.count() == 1
    assert sorted(seeded.repo.list_node_refs()) == [0]
    assert seeded.check() == []


# ---- updates ------------------------------------------------------------------------------


def test_update_and_reload(seeded, tmp_path):
    n = seeded.add_node(parent_id=0, status="proposed", operator="diff", files={"main.py": "x = 2\n"}, message="m")
    before = seeded.get(n.id)
    stages = [{"name": "syntax", "ok": True}, {"name": "eval", "ok": True, "detail": {"n": 26}}]
    upd = seeded.update_node(
        n.id,
        status=NodeStatus.ADMITTED,
        score=2.625,
        stages=stages,
        public_metrics={"sum_radii": 2.625, "overflow": float("inf")},
        private_metrics={"holdout": 1.5},
        feedback="ok",
        prompt_tokens=120,
        cost_usd=0.01,
        timings={"eval_s": 1.25},
    )
    assert upd.status is NodeStatus.ADMITTED and upd.updated_at >= before.updated_at
    seeded.close()
    with Archive.open(tmp_path / "run", readonly=True) as ro:
        got = ro.get(n.id)
    assert got == upd
    assert got.stages == stages and got.public_metrics["overflow"] == float("inf")
    assert got.created_at == before.created_at and got.commit == before.commit

    with Archive.open(tmp_path / "run") as a:
        with pytest.raises(ValueError, match="unknown node field"):
            a.update_node(n.id, scroe=1.0)
        with pytest.raises(ValueError, match="cannot be changed"):
            a.update_node(n.id, parent_id=None)
        with pytest.raises(KeyError, match="no node 99 in .*archive.db"):
            a.update_node(99, score=1.0)
        with pytest.raises(ValueError):
            a.update_node(n.id, status="done")
        assert a.get(n.id) == upd


def test_readonly_refuses_writes(seeded, tmp_path):
    with Archive.open(tmp_path / "run", readonly=True) as ro:
        assert ro.count() == 1 and ro.campaign == "cp"
        with pytest.raises(PermissionError, match="read-only"):
            ro.update_node(0, score=1.0)
        with pytest.raises(PermissionError, match="read-only"):
            ro.add_node(parent_id=0, status="proposed", operator="d", message="m")
        with pytest.raises(PermissionError, match="read-only"):
            ro.recover()


def test_open_and_create_errors(tmp_path, arc):
    with pytest.raises(NotARunDir, match=str(tmp_path / "nope")):
        Archive.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotARunDir, match="not a dgm run directory"):
        Archive.open(tmp_path / "empty", readonly=True)
    with pytest.raises(FileExistsError, match="already holds a run"):
        Archive.create(tmp_path / "run", "again")


# ---- queries ------------------------------------------------------------------------------


def test_counts_best_and_filters(seeded):
    a = seeded
    a.add_node(parent_id=0, status="admitted", operator="d", message="m", score=3.0)  # 1
    a.add_node(parent_id=0, status="rejected", operator="d", message="m", score=9.0)  # 2
    a.add_node(parent_id=1, status="admitted", operator="d", message="m", score=3.0)  # 3
    a.add_node(parent_id=1, status="invalid", operator="d", message="m")  # 4
    a.add_node(parent_id=1, status="admitted", operator="d", message="m")  # 5, no score
    assert a.children_counts() == {0: 1, 1: 2}
    assert a.children_counts(statuses=None) == {0: 2, 1: 3}
    assert a.children_counts(statuses=("invalid", "rejected")) == {0: 1, 1: 1}
    assert [n.id for n in a.best()] == [1]
    assert [n.id for n in a.best(3)] == [1, 3, 0]
    assert [n.id for n in a.nodes(status="admitted")] == [0, 1, 3, 5]
    assert [n.id for n in a.nodes(status=[NodeStatus.INVALID, "rejected"])] == [2, 4]
    assert a.count() == 6 and a.count(status="admitted") == 4
    assert a.store.count(campaign="other") == 0 and a.store.all(campaign="cp")[0].id == 0
    assert a.store.next_id() == 6


def test_meta(arc, tmp_path):
    assert arc.get_meta("campaign") == "cp"
    assert arc.get_meta("schema_version") == "1"
    assert arc.get_meta("config_hash") is None and arc.get_meta("config_hash", "x") == "x"
    arc.set_meta("config_hash", "abc123")
    arc.close()
    with Archive.open(tmp_path / "run", readonly=True) as ro:
        assert ro.get_meta("config_hash") == "abc123"


def test_diff_vs_parent(seeded):
    child = seeded.add_node(
        parent_id=0,
        status="proposed",
        operator="diff",
        files={"main.py": "x = 2\n", "lib/util.py": "def f():\n    return 1\n", "new.py": "y = 0\n"},
        message="m",
    )
    d = seeded.diff(child.id)
    assert "--- a/main.py\n+++ b/main.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n" in d
    assert "diff --git a/new.py b/new.py\nnew file mode 100644\n" in d
    assert "util.py" not in d
    assert d.endswith("\n")
    seed_diff = seeded.diff(0)
    assert seed_diff.count("new file mode 100644") == 2
    assert "+++ b/lib/util.py\n@@ -0,0 +1,2 @@\n+def f():\n+    return 1\n" in seed_diff


def test_export_json_and_dot(seeded):
    seeded.add_node(parent_id=0, status="invalid", operator="diff", message="m", error="syntax error")
    seeded.add_node(parent_id=0, status="admitted", operator="diff", message="m", score=2.5,
                    public_metrics={"bad": float("nan")})
    doc = json.loads(seeded.export("json"))  # strict: NaN must not appear
    assert doc["campaign"] == "cp"
    assert [(n["id"], n["parent_id"], n["status"], n["score"]) for n in doc["nodes"]] == [
        (0, None, "admitted", 0.5), (1, 0, "invalid", None), (2, 0, "admitted", 2.5)
    ]
    assert doc["nodes"][1]["error"] == "syntax error"
    assert doc["nodes"][2]["public_metrics"] == {"bad": None}
    assert doc["nodes"][0]["commit"] == seeded.get(0).commit
    assert "NaN" not in seeded.export("json")

    dot = seeded.export("dot")
    assert dot.startswith("digraph dgm {\n") and dot.endswith("}\n")
    assert '  n0 [label="0\\nadmitted\\n0.5", fillcolor="#a6d96a"];' in dot
    assert '  n1 [label="1\\ninvalid\\n-", fillcolor="#fdae61"];' in dot
    assert '  n2 [label="2\\nadmitted\\n2.5", fillcolor="#a6d96a"];' in dot
    assert [l.strip() for l in dot.splitlines() if "->" in l] == ["n0 -> n1;", "n0 -> n2;"]
    with pytest.raises(ValueError, match="unknown export format"):
        seeded.export("xml")


# ---- check() ------------------------------------------------------------------------------


@pytest.fixture
def tree(seeded):
    for parent in (0, 0, 1):
        seeded.add_node(parent_id=parent, status="admitted", operator="diff", files={"main.py": f"p{parent}"},
                        message="m")
    assert seeded.check() == []
    return seeded  # nodes 0..3; 3 is a child of 1


def sql(a: Archive, stmt: str, *params) -> None:
    con = sqlite3.connect(a.run_dir / "archive.db")
    con.execute(stmt, params)
    con.commit()
    con.close()


def test_check_reports_deleted_ref(tree):
    git(tree.run_dir, "update-ref", "-d", node_ref(2))
    assert tree.check() == ["node 2: ref refs/dgm/nodes/2 is missing"]


def test_check_reports_moved_ref(tree):
    c1, c2 = tree.get(1).commit, tree.get(2).commit
    git(tree.run_dir, "update-ref", node_ref(2), c1)
    assert tree.check() == [f"node 2: ref refs/dgm/nodes/2 points at {c1}, row says {c2}"]


def test_check_reports_ref_without_row(tree):
    sql(tree, "DELETE FROM nodes WHERE id = 3")
    assert tree.check() == [
        f"ref refs/dgm/nodes/3 -> {tree.repo.list_node_refs()[3]} has no row "
        "(attempt in flight or killed before its row; recover() deletes it)"
    ]
    sql(tree, "DELETE FROM nodes WHERE id = 1")
    problems = tree.check()
    assert problems[0] == "node ids are not consecutive; missing rows [1]"
    assert [p.split(" -> ")[0] for p in problems[1:]] == ["ref refs/dgm/nodes/1", "ref refs/dgm/nodes/3"]


def test_check_reports_wrong_git_parent_and_bad_rows(tree):
    sql(tree, "UPDATE nodes SET parent_id = 2 WHERE id = 3")
    c1, c2 = tree.get(1).commit, tree.get(2).commit
    assert tree.check() == [f"node 3: commit's git parent is {c1}, expected node 2's commit {c2}"]
    sql(tree, "UPDATE nodes SET parent_id = 1 WHERE id = 3")
    sql(tree, "UPDATE nodes SET status = 'weird', campaign = 'x' WHERE id = 1")
    assert tree.check() == ["node 1: invalid status 'weird'", "node 1: campaign 'x' differs from the run's 'cp'"]
    sql(tree, "UPDATE nodes SET status = 'admitted', campaign = 'cp', parent_id = NULL WHERE id = 1")
    assert tree.check() == [
        "expected exactly one seed (node without parent), found 2: [0, 1]",
        f"node 1: seed commit {c1} has git parents {[tree.get(0).commit]}",
    ]
    sql(tree, "UPDATE nodes SET parent_id = 9 WHERE id = 1")
    assert "node 1: parent 9 does not exist" in tree.check()
    sql(tree, "UPDATE nodes SET parent_id = 0, \"commit\" = ? WHERE id = 1", "0" * 40)
    assert tree.check() == [
        f"node 1: ref refs/dgm/nodes/1 points at {c1}, row says {'0' * 40}",
        f"node 1: commit '{'0' * 40}' does not exist in the repository",
        f"node 3: commit's git parent is {c1}, expected node 1's commit {'0' * 40}",
    ]


# ---- recover() ----------------------------------------------------------------------------


def test_recover_removes_orphan_ref_and_lists_in_flight(tree):
    tree.add_node(parent_id=0, status="proposed", operator="diff", message="m")  # 4
    tree.add_node(parent_id=0, status="evaluating", operator="diff", message="m")  # 5
    tree.add_node(parent_id=0, status="rejected", operator="diff", message="m")  # 6
    # an attempt killed between its commit and its row, mid ref update of another
    orphan = tree.repo.commit_files({"a.py": b"1"}, tree.get(0).commit, "orphan", node_ref(7))
    (tree.run_dir / "repo.git" / "refs/dgm/nodes/8.lock").write_text("dead\n")
    assert tree.check() == [
        f"ref refs/dgm/nodes/7 -> {orphan} has no row (attempt in flight or killed before its row; recover() deletes it)"
    ]
    report = tree.recover()
    assert report.deleted_refs == [7]
    assert report.removed_locks == ["refs/dgm/nodes/8.lock"]
    assert report.in_flight == [4, 5]
    assert tree.get(4).status is NodeStatus.PROPOSED  # left for the caller
    assert tree.check() == []
    assert not tree.repo.ref_exists(node_ref(7))
    n = tree.add_node(parent_id=0, status="proposed", operator="diff", files={"b.py": "2"}, message="m")
    assert n.id == 7 and tree.check() == []
    assert tree.recover().deleted_refs == []


def test_add_node_overwrites_orphan_ref_without_recover(seeded):
    seeded.repo.commit_files({"a.py": b"1"}, None, "orphan", node_ref(1))
    n = seeded.add_node(parent_id=0, status="proposed", operator="diff", files={"a.py": "2"}, message="m")
    assert n.id == 1 and seeded.repo.read_ref(node_ref(1)) == n.commit
    assert seeded.check() == []


def test_packed_refs_are_read(tree):
    git(tree.run_dir, "pack-refs", "--all")
    assert not (tree.run_dir / "repo.git" / "refs/dgm/nodes/1").exists()
    assert tree.repo.read_ref(node_ref(1)) == tree.get(1).commit
    assert tree.check() == []
    tree.add_node(parent_id=3, status="proposed", operator="diff", message="m")
    tree.repo.delete_ref(node_ref(2))
    assert tree.check() == ["node 2: ref refs/dgm/nodes/2 is missing"]


# ---- store --------------------------------------------------------------------------------


def test_store_get_missing_and_wal(tmp_path):
    s = NodeStore(tmp_path / "archive.db", create=True)
    assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.next_id() == 0
    with pytest.raises(KeyError, match=r"no node 0 in .*archive\.db"):
        s.get(0)
    s.insert(Node(id=0, campaign="c", parent_id=None, status="admitted", commit="a" * 40))
    with pytest.raises(ValueError, match="already exists"):
        s.insert(Node(id=0, campaign="c", parent_id=None, status="admitted", commit="a" * 40))
    assert s.next_id() == 1
    s.close()


def test_store_adds_columns_for_new_node_fields(tmp_path):
    s = NodeStore(tmp_path / "archive.db", create=True)
    s.insert(Node(id=0, campaign="c", parent_id=None, status="admitted", commit="a" * 40, error="e", timings={"x": 1}))
    s._conn.execute("ALTER TABLE nodes DROP COLUMN error")
    s._conn.execute("ALTER TABLE nodes DROP COLUMN timings")
    s.close()
    ro = NodeStore.open_readonly(tmp_path / "archive.db")  # older file, newer code: defaults
    assert ro.get(0).error == "" and ro.get(0).timings == {}
    ro.close()
    s = NodeStore(tmp_path / "archive.db")
    cols = {r[1] for r in s._conn.execute("PRAGMA table_info(nodes)")}
    assert {"error", "timings"} <= cols
    assert s.get(0).error == "" and s.get(0).timings == {}
    s.update(0, error="later", timings={"y": 2.0})
    assert s.get(0).error == "later" and s.get(0).timings == {"y": 2.0}
    s.close()


# ---- threads and the writer lock ----------------------------------------------------------


def test_threads_add_nodes_concurrently(seeded):
    errors = []

    def work(k):
        try:
            for i in range(8):
                n = seeded.add_node(parent_id=0, status="proposed", operator=f"t{k}", files={"f.py": f"{k}-{i}"},
                                    message="m")
                seeded.update_node(n.id, status="admitted", score=float(i))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [n.id for n in seeded.nodes()] == list(range(33))
    assert seeded.children_counts() == {0: 32}
    assert seeded.check() == []


def test_one_writer_process_per_run(seeded, tmp_path):
    code = (
        "import sys\nfrom archive import Archive, ArchiveLocked\n"
        "try:\n    Archive.open(sys.argv[1])\nexcept ArchiveLocked as e:\n    print('locked:', e)\n"
        "else:\n    print('opened')\n"
    )

    def other_process() -> str:
        return subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True,
                              cwd=ROOT, check=True).stdout.strip()

    out = other_process()
    assert out.startswith(f"locked: run directory {os.path.realpath(tmp_path / 'run')} is already open for writing")
    assert f"(pid {os.getpid()})" in out
    second = Archive.open(tmp_path / "run")  # same process: shares the lock
    second.close()
    assert other_process().startswith("locked:")  # still held by `seeded`
    seeded.close()
    assert other_process() == "opened"


def test_a_crash_is_summed_up_by_its_exception_not_its_exit_code():
    """`archive list` and the UI show one line of a node's error: for a crash, "stage full: exit
    code 1" said nothing (circle packing seed 4: 5 of its 20 invalid children read so)."""
    crash = ("stage full: exit code 1\n/tmp/x/packing.py:46: RuntimeWarning: invalid value\n"
             "Traceback (most recent call last):\n  File \"packing.py\", line 16, in construct_packing\n"
             "    centers[9 + i] = 0\nIndexError: index 26 is out of bounds for axis 0 with size 26\n")
    node = Node(id=1, campaign="c", parent_id=0, status=NodeStatus.INVALID, commit="x", error=crash)
    assert node.error_line == "stage full: IndexError: index 26 is out of bounds for axis 0 with size 26"
    # any other error: its first line, as before
    node = node.model_copy(update={"error": "SEARCH block 1 does not match\n(first line: 'x = 1')"})
    assert node.error_line == "SEARCH block 1 does not match"
    assert node.model_copy(update={"error": ""}).error_line == ""
    # the same rule names what broke to the model in a repair turn, so the two cannot drift
    from orchestrator.mutation.operators import _last_line
    assert _last_line(crash) == what_broke(crash) == "IndexError: index 26 is out of bounds for axis 0 with size 26"
    assert _last_line("") == "(no message)" and what_broke("") == ""
    one_line = "stage full: Traceback (most recent call last)"
    assert node.model_copy(update={"error": one_line}).error_line == one_line  # no stage said twice
