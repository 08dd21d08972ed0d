"""Fault injection, local executor: the sandboxed candidate's process tree is killed from outside
while it is being evaluated. The node ends with the reason, nothing admitted is lost, the campaign
goes on, and a resume continues without duplicates.

The candidate marks itself: it writes a file of a unique name in its work directory and then
sleeps. The test finds that file, then the processes whose working directory it is (host pids, so
this works through bwrap's pid namespace), and SIGKILLs them. The helpers are shared with
tests/test_ray_executor.py, which kills the Ray worker above such a candidate instead.
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from pathlib import Path

import pytest

from archive import Archive, NodeStatus
from orchestrator.campaign import Campaign
from orchestrator.config import load_config
from orchestrator.fm.client import FMClient
from tests.campaign_helpers import GRID, answer_once, rewrite, wait_for, write_config
from sandboxes import scratch
from tests.fm_server import Reply, ScriptedFMServer

# evaluators.pipeline's stage directories live in the scratch root of the process that evaluates
# (this one, or a Ray worker): every root is searched
TMP = scratch.root().parent


def slow_grid(marker: str, seconds: float = 30.0) -> str:
    """The 5x5 grid, but it first writes ``marker`` in its working directory and sleeps."""
    return GRID.replace(
        "def construct_packing():\n",
        f"def construct_packing():\n    import time\n    open({marker!r}, 'w').close()\n    time.sleep({seconds})\n",
    )


def marked_dir(marker: str) -> Path | None:
    """The work directory of the running candidate that wrote ``marker``, if any yet."""
    for pattern in (f"{scratch.PREFIX}*/*/{marker}", f"{scratch.PREFIX}*/*/*/{marker}"):
        try:
            found = next(TMP.glob(pattern), None)
        except OSError:  # other evaluations' directories come and go while we look
            continue
        if found is not None:
            return found.parent
    return None


def pids_in(workdir: Path) -> list[int]:
    """Host pids of the processes whose working directory is ``workdir``."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.path.samefile(entry / "cwd", workdir):
                    out.append(int(entry.name))
            except OSError:  # gone, or not ours to read
                pass
    return out


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def ancestor(pid: int, matches) -> int | None:
    """The nearest ancestor of ``pid`` (itself included) whose command line ``matches``."""
    while pid > 1:
        if matches(cmdline(pid)):
            return pid
        try:
            pid = parent_of(pid)
        except OSError:
            return None
    return None


def wait_for_candidate(marker: str, timeout: float = 120.0) -> list[int]:
    """The host pids of the running candidate marked ``marker``, once it has started."""
    seen: list[int] = []

    def started() -> bool:
        workdir = marked_dir(marker)
        seen[:] = pids_in(workdir) if workdir is not None else []
        return bool(seen)

    wait_for(started, f"candidate {marker} to start", timeout)
    return seen


def kill_when_marked(marker: str, pick=lambda pids: pids, timeout: float = 120.0) -> tuple[threading.Thread, list]:
    """A thread that waits for the candidate marked ``marker`` and SIGKILLs ``pick(pids)`` of it;
    what it killed (or the error) goes into the returned list."""
    killed: list = []

    def run():
        try:
            targets = pick(wait_for_candidate(marker, timeout))
            assert targets, "no process to kill"
            for pid in targets:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:  # already gone with one killed before it
                    pass
            assert killed, f"every one of {targets} was gone before the kill"
        except BaseException as e:  # reported by the test
            killed.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, killed


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("DGM_TEST_KEY", "sk-test-secret-123")


def run_campaign(tmp_path, server, **kw):
    cfg = load_config(write_config(tmp_path, server.base_url, **kw))
    with FMClient.from_config(cfg.fm) as fm:
        return Campaign(cfg, tmp_path / "run", fm).run()


def test_a_candidate_killed_mid_evaluation_ends_recorded_and_the_campaign_goes_on(tmp_path):
    marker = f"kill-me-{uuid.uuid4().hex}"
    killer, killed = kill_when_marked(marker)
    # the second answer waits until the killed node has its verdict: the order is observable, not timed
    after_kill = answer_once(tmp_path / "run", lambda nodes: len(nodes) > 1 and nodes[1].status.finished,
                             Reply(rewrite(GRID)), "the killed node to be recorded")
    with ScriptedFMServer([Reply(rewrite(slow_grid(marker)))], responder=after_kill) as srv:
        stats = run_campaign(tmp_path, srv, iterations=2, workers=1, eval_timeout_s=60, timeout_s=150)
    killer.join(5)
    assert killed and all(isinstance(k, int) for k in killed), killed
    assert stats.stop_reason == "reached 2 iterations"
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        assert archive.check() == []
        victim, after = archive.get(1), archive.get(2)
        assert victim.status in (NodeStatus.INVALID, NodeStatus.FAILED) and victim.error, victim
        assert "exit code 137" in victim.error or "signal" in victim.error.lower(), victim.error  # 128 + SIGKILL
        assert victim.score is None
        assert after.status == NodeStatus.ADMITTED and archive.get(0).status == NodeStatus.ADMITTED
        admitted = {n.id for n in archive.nodes() if n.status == NodeStatus.ADMITTED}
    # the campaign resumes from there: one more attempt, nothing duplicated, every node finished
    with ScriptedFMServer([], default=Reply(rewrite(GRID.replace("0.04", "0.039")))) as srv:
        stats = run_campaign(tmp_path, srv, iterations=3, workers=1)
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        nodes = archive.nodes()
        assert [n.id for n in nodes] == [0, 1, 2, 3] and all(n.status.finished for n in nodes)
        assert admitted <= {n.id for n in nodes if n.status == NodeStatus.ADMITTED}  # nothing admitted is lost
        assert archive.get(1).status == victim.status  # a recorded verdict is not re-opened
        assert archive.check() == []


def test_ctrl_c_ends_the_evaluations_in_flight_at_once_and_leaves_their_node_to_the_resume(tmp_path):
    """Ctrl-C on `dgm run` while a candidate runs for minutes: the process exits within seconds,
    the candidate's processes are gone, and the node is left for the resume to evaluate again.
    Before, the exit waited for every sandboxed run in flight (its thread is joined at exit)."""
    import subprocess
    import sys
    import time

    marker = f"ctrl-c-{uuid.uuid4().hex}"
    with ScriptedFMServer([Reply(rewrite(slow_grid(marker, seconds=600)))]) as srv:
        config = write_config(tmp_path, srv.base_url, iterations=1, workers=1, eval_timeout_s=900, timeout_s=150)
        # SIGINT as a terminal leaves it: a shell's background job (CI, nohup ... &) inherits it
        # ignored, and Python then installs no KeyboardInterrupt handler at all
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", str(config), "--no-live"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            seen = wait_for_candidate(marker, 180)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
            took = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130 and ("aborted" in err or "interrupted" in err), err
    assert took < 30, f"dgm run took {took:.0f} s to stop after Ctrl-C"

    def running(pid: int) -> bool:  # a zombie waiting for its reaper is not running
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    wait_for(lambda: not any(map(running, seen)), f"the candidate's processes {seen} to be gone", 10)
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        assert archive.check() == []
        node = archive.get(1)
        assert node is not None and not node.status.finished, node  # no verdict from a killed run
