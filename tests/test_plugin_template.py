"""`dgm init --template plugin` makes a package that pip installs and dgm finds through its entry
point, with no change to dgm: listed, evaluated, and run as a campaign."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.fm_server import Reply, ScriptedFMServer

BETTER = '''```python
import numpy as np


def f(x):
    x = np.asarray(x, dtype=float)
    return np.sin(2 * x) + 0.3 * x ** 2
```
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugin")
    subprocess.run([sys.executable, "-m", "orchestrator.cli", "init", root / "curvefit", "--template", "plugin"],
                   check=True, capture_output=True)
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", site, root / "curvefit"], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(site), "DGM_TEST_KEY": "k"}
    return root / "curvefit", env


def dgm(env, *args):
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *map(str, args)], capture_output=True, text=True, env=env)


def test_plugin_is_listed_and_evaluates(plugin):
    src, env = plugin
    listed = json.loads(dgm(env, "evaluators", "list", "--json").stdout)
    entry = next(e for e in listed if e["name"] == "curvefit")
    assert [s["name"] for s in entry["stages"]] == ["smoke", "full"]
    res = dgm(env, "eval", "--evaluator", "curvefit", src / "src" / "dgm_curvefit" / "seed", "--json")
    out = json.loads(res.stdout)
    assert res.returncode == 0 and out["valid"]
    assert [s["stage"] for s in out["stages"]] == ["smoke", "full"]
    assert 0 < out["public_metrics"]["mse"] and "heldout_mse" in out["private_metrics"]


def test_plugin_options_are_validated_by_its_model(plugin):
    src, env = plugin
    res = dgm(env, "eval", "--evaluator", "curvefit", src / "src" / "dgm_curvefit" / "seed", "--option", "points=3")
    assert res.returncode != 0 and "evaluator 'curvefit': option 'points' = 3: must be >= 16" in res.stderr


def test_plugin_campaign_runs_without_touching_dgm(plugin, tmp_path):
    src, env = plugin
    with ScriptedFMServer([], default=Reply(f"Fit the curve.\n{BETTER}")) as srv:
        cfg = (src / "campaign.toml").read_text().replace(
            'provider = "embedded"',
            f'provider = "openai"\nmodel = "scripted"\nbase_url = "{srv.base_url}"\napi_key_env = "DGM_TEST_KEY"',
        ).replace("iterations = 20", "iterations = 2")
        (tmp_path / "campaign.toml").write_text(cfg)
        res = dgm(env, "run", tmp_path / "campaign.toml", "--no-live")
        assert res.returncode == 0, res.stderr
        prompts = [json.dumps(r["messages"]) for r in srv.requests]
    status = json.loads(dgm(env, "status", tmp_path / "run", "--json").stdout)
    assert status["best"]["score"] == pytest.approx(1.0)  # the exact target: mse 0
    assert all("heldout_mse" not in p for p in prompts)  # private metrics never reach the FM
