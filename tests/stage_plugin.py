"""A three-stage evaluator plugin for stage-semantics tests, modelled on a third-party online
bin-packing plugin. Each stage's outcome is scripted by the agent's ``plan.json``; the evaluator runs
nothing. Its source is written into a temporary directory (``install``) so that the pipeline's
fingerprint of the evaluator's files covers only that directory."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

SOURCE = '''"""Online bin packing, reduced to its stages: what each stage finds is read from plan.json."""
import json
from pathlib import Path

from evaluators.api import CandidateInvalid, Evaluator, MetricSpec, Stage, StageOutcome
from sandboxes.base import Limits


class BinPackingEvaluator(Evaluator):
    name = "binpacking"
    task = "Implement choose_bin(item, bins) in bins.py."
    stages = (
        Stage("smoke", Limits(wall_s=5), gate={"valid": 1.0}),
        Stage("small", Limits(wall_s=5), gate={"score": 0.5}),
        Stage("full", Limits(wall_s=5)),
    )
    metrics = (MetricSpec("valid", 0.0, 1.0), MetricSpec("bins_used", 0.0, 1e6, higher_is_better=False))

    def seed_agent(self):
        return Path(__file__).parent / "seed"

    def run_stage(self, stage, run):
        plan = json.loads(run.read_artifact("plan.json")).get(stage.name, {})
        if "invalid" in plan:
            raise CandidateInvalid(plan["invalid"])
        if "crash" in plan:
            raise RuntimeError(plan["crash"])
        score = plan.get("score", 0.9)
        return StageOutcome(score=score, metrics={"valid": 1.0, "bins_used": 10.0},
                            feedback=f"{score:.4f} of the lower bound on bins")
'''

LATER_STAGE_INVALID = {"smoke": {"score": 0.9419}, "small": {"score": 0.9},
                       "full": {"invalid": "choose_bin returned 5, but 0 bins are open"}}


def install(site: Path) -> None:
    """The plugin as an installed distribution under ``site`` (entry points ``binpacking``, and
    ``broken``, whose module does not exist)."""
    (site / "dgm_binpacking").mkdir(parents=True)
    (site / "dgm_binpacking" / "__init__.py").write_text(SOURCE)
    info = site / "dgm_binpacking-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dgm-binpacking\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[dgm.evaluators]\nbinpacking = dgm_binpacking:BinPackingEvaluator\nbroken = dgm_no_such_module:Nope\n")


def evaluator_class(site: Path) -> type:
    """The plugin's class, imported from ``site`` under a name of its own."""
    spec = importlib.util.spec_from_file_location("dgm_binpacking_under_test", site / "dgm_binpacking" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # where inspect finds the file the pipeline fingerprints
    spec.loader.exec_module(module)
    return module.BinPackingEvaluator


def agent(root: Path, plan: dict) -> Path:
    """An agent whose plan.json says what each stage finds."""
    root.mkdir(parents=True)
    (root / "agent.toml").write_text('[agent]\nentry = "bins.py"\neditable = ["bins.py"]\n')
    (root / "bins.py").write_text("def choose_bin(item, bins):\n    return 0\n")
    (root / "plan.json").write_text(json.dumps(plan))
    return root
