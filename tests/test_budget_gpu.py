"""GPU-seconds: every evaluation holding a GPU lease is charged its share (wall time × GPUs / the
evaluations sharing one), fit's trial evaluations included; `[budget] max_gpu_s` stops a campaign
across resumes, and `dgm status` shows what was spent. A fake GPU pool stands in for the device
(this machine has none); the process backend runs the candidate, so nothing binds a device node."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from archive import Archive
from orchestrator.campaign import Campaign
from orchestrator.cli import cli
from orchestrator.config import load_config
from orchestrator.executor import EvaluationEnvironment, make_executor
from orchestrator.fm.client import FMClient
from sandboxes.gpu import Gpu, GpuPool
from tests.campaign_helpers import GRID, rewrite, write_config
from tests.fm_server import Reply, ScriptedFMServer

TRUSTED = '[sandbox]\nbackend = "process"\ntrusted = true\n'


def run(tmp_path, srv, iterations, extra=""):
    cfg = load_config(write_config(tmp_path, srv.base_url, iterations=iterations, operators="{ rewrite = 0.5, fit = 0.5 }",
                                   extra=TRUSTED + "[mutation.fit]\nevaluations = 8\nmax_evaluations = 8\n" + extra))
    pool = GpuPool([Gpu(0, "fake", "GPU-0")], per_gpu=2, control_nodes=())
    executor = make_executor(cfg.evaluation, EvaluationEnvironment(fm=None, gpu_pool=pool))
    with FMClient.from_config(cfg.fm) as fm:
        try:
            return Campaign(cfg, tmp_path / "run", fm, executor=executor).run()
        finally:
            executor.shutdown()


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv("DGM_TEST_KEY", "k")


def test_gpu_seconds_are_charged_kept_across_resumes_and_capped(tmp_path):
    with ScriptedFMServer([], default=Reply(rewrite(GRID))) as srv:
        run(tmp_path, srv, iterations=3)
        with Archive.open(tmp_path / "run", readonly=True) as archive:
            nodes = archive.nodes()
        evaluated = [n for n in nodes if n.stages]
        assert evaluated and all(n.timings["gpu_s"] > 0 for n in evaluated)
        seed = nodes[0]
        for n in nodes:
            if n.operator == "fit" and n.stages:  # its 8 trials held the GPU too, not only its own draw
                assert n.timings["gpu_s"] > 2 * seed.timings["gpu_s"] / max(1, len(seed.draws))
        spent = sum(n.timings.get("gpu_s", 0.0) for n in nodes)
        status = json.loads(CliRunner().invoke(cli, ["status", str(tmp_path / "run"), "--json"]).output)
        assert status["gpu_s"] == pytest.approx(spent, abs=1e-3)

        # a resume under a cap already spent makes no new attempt, and says which budget
        stats = run(tmp_path, srv, iterations=6, extra=f"[budget]\nmax_gpu_s = {spent / 2:.6f}\n")
        assert stats.stop_reason.startswith(f"budget reached: {spent:.4f} GPU-seconds used of [budget].max_gpu_s")
        with Archive.open(tmp_path / "run", readonly=True) as archive:
            assert archive.count() == len(nodes)
    text = CliRunner().invoke(cli, ["status", str(tmp_path / "run")]).output
    # the text shows the total `dgm status --json` gives (rounded to 3 decimals), at one decimal:
    # `spent` itself can round the other way at one decimal (1.3499 -> "1.3", but 1.35 -> "1.4")
    assert f"{status['gpu_s']:.1f} GPU-seconds" in text and "max_gpu_s = " in text
