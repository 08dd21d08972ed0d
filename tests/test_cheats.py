"""Known reward hacks, each tried by a candidate through the real pipeline and the default sandbox:
every one is recorded invalid or scored honestly, never admitted with an inflated score.

The candidates run against a COPY of the circle-packing evaluator in a temporary directory: even if
the sandbox regressed, a candidate that writes to "the evaluator" could not corrupt the working tree.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evaluators.circle_packing.evaluator import HERE as CP_DIR
from evaluators.pipeline import evaluate
from sandboxes.factory import make_sandbox

SEED_SUM = 1.8365015544609251
SEED_IMPORT = "import numpy as np\nimport importlib.util, sys, os\n"


def agent(tmp_path: Path, code: str) -> Path:
    d = tmp_path / "agent"
    d.mkdir()
    (d / "agent.toml").write_text('[agent]\nentry = "packing.py"\neditable = ["packing.py"]\n')
    (d / "packing.py").write_text(code)
    return d


@pytest.fixture(scope="module")
def evaluator_copy(tmp_path_factory) -> type:
    """The circle-packing evaluator class, imported from a copy of its package."""
    root = tmp_path_factory.mktemp("evaluator-copy") / "circle_packing"
    shutil.copytree(CP_DIR, root, ignore=shutil.ignore_patterns("__pycache__"))
    spec = importlib.util.spec_from_file_location("circle_packing_under_attack", root / "evaluator.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # inspect (the pipeline's fingerprint) finds the copy's file here
    spec.loader.exec_module(module)
    assert Path(module.__file__).parent == root and module.HERE == root
    return module.CirclePackingEvaluator


@pytest.fixture
def run(evaluator_copy):
    def run(tmp_path, code, **options):
        evaluator = evaluator_copy(**{"timeout_s": 4, **options})
        return evaluate(evaluator, agent(tmp_path, code), make_sandbox("auto"), seed=1)

    return run


SEED_BODY = (CP_DIR / "seed" / "packing.py").read_text()


def test_nan_metric_is_invalid(tmp_path, run):
    res = run(tmp_path, "import numpy as np\ndef construct_packing():\n    return np.zeros((26, 2)) + 0.5, np.full(26, np.nan)\n")
    assert not res.valid and "NaN" in res.error


def test_self_reported_score_is_ignored(tmp_path, run):
    # the candidate writes its own result.json claiming huge radii, then exits before the harness
    code = SEED_BODY + (
        "\n_real = construct_packing\n"
        "def construct_packing():\n"
        "    import json, os\n"
        "    json.dump({'centers': [[0.5, 0.5]] * 26, 'radii': [0.5] * 26, 'sum_radii': 13.0, 'score': 99},"
        " open('result.json', 'w'))\n"
        "    os._exit(0)\n"
    )
    res = run(tmp_path, code)
    assert not res.valid and "overlap" in res.error


def test_honest_rescoring_of_a_reported_sum(tmp_path, run):
    # returns the seed's geometry: whatever it prints or reports, the score is the recomputed sum
    code = SEED_BODY + "\nprint('sum_radii = 2.9  score = 1.1')\n"
    res = run(tmp_path, code)
    assert res.valid and res.public_metrics["sum_radii"] == pytest.approx(SEED_SUM)


def test_evaluator_patching_fails_and_is_detected(tmp_path, run, evaluator_copy):
    path = Path(sys.modules[evaluator_copy.__module__].__file__)  # the copy's evaluator.py
    code = SEED_BODY + (
        "\n_orig = construct_packing\n"
        "def construct_packing():\n"
        f"    with open({str(path)!r}, 'a') as f:\n"
        "        f.write('\\nBEST_KNOWN = 0.001\\n')\n"
        "    return _orig()\n"
    )
    before = path.read_bytes()
    res = run(tmp_path, code)
    assert path.read_bytes() == before
    assert not res.valid
    assert "No such file or directory" in res.error or "Read-only file system" in res.error


def test_hidden_data_and_host_secrets_are_not_readable(tmp_path, monkeypatch, run):
    secret_dir = tmp_path / "hidden"
    secret_dir.mkdir()
    (secret_dir / "labels.txt").write_text("the answers")
    monkeypatch.setenv("DGM_SECRET_TOKEN", "sk-should-not-leak")
    code = SEED_BODY + (
        "\n_orig = construct_packing\n"
        "def construct_packing():\n"
        "    import os\n"
        f"    assert not os.path.exists({str(secret_dir / 'labels.txt')!r}), 'hidden data visible'\n"
        "    assert 'DGM_SECRET_TOKEN' not in os.environ, 'secret visible'\n"
        "    assert not os.path.exists(os.path.expanduser('~root/.cache/dgm')), 'host home visible'\n"
        "    return _orig()\n"
    )
    res = run(tmp_path, code)
    assert res.valid, res.error


def test_timeout_extension_by_detached_child_is_killed(tmp_path, run):
    # the candidate raises its own limits, ignores SIGTERM and leaves a detached child behind
    code = SEED_BODY + (
        "\n_orig = construct_packing\n"
        "def construct_packing():\n"
        "    import os, resource, signal\n"
        "    try:\n"
        "        resource.setrlimit(resource.RLIMIT_CPU, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n"
        "    except (ValueError, OSError):\n"
        "        pass\n"
        "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        os.execvp('sleep', ['sleep', '7.31415'])\n"
        "    while True:\n"
        "        pass\n"
    )
    res = run(tmp_path, code, timeout_s=1.5)
    assert not res.valid and "wall-clock" in res.error
    survivors = subprocess.run(["pgrep", "-f", "sleep 7.31415"], capture_output=True, text=True).stdout.split()
    assert survivors == []


def test_a_file_named_like_a_module_cannot_stand_in_for_it(tmp_path, evaluator_copy):
    # the work directory is the last place imports look: the candidate's numpy.py never replaces
    # numpy, for the harness or for the candidate's own code
    d = agent(tmp_path, SEED_BODY)
    (d / "numpy.py").write_text("raise RuntimeError('the shadow numpy was imported')\n")
    res = evaluate(evaluator_copy(timeout_s=4), d, make_sandbox("auto"), seed=1)
    assert res.valid and res.public_metrics["sum_radii"] == pytest.approx(SEED_SUM), res.error


def test_symlinked_artifact_is_not_followed(tmp_path, run):
    # a valid packing sits outside the sandbox; the candidate points result.json at it and exits
    hidden = tmp_path / "evaluator-side" / "answer.json"
    hidden.parent.mkdir()
    xs = [(i + 0.5) / 5 for i in range(5)]
    hidden.write_text(json.dumps({"centers": [[x, y] for x in xs for y in xs] + [[0.2, 0.2]], "radii": [0.1] * 25 + [0.04]}))
    code = SEED_BODY + (
        "\n_orig = construct_packing\n"
        "def construct_packing():\n"
        "    import os\n"
        f"    os.symlink({str(hidden)!r}, 'result.json')\n"
        "    os._exit(0)\n"
    )
    res = run(tmp_path, code)
    assert not res.valid
    assert "link" in res.error.lower() or "symlink" in res.error.lower()


def test_datasets_bundled_in_packages_are_hidden(tmp_path, run):
    # suites draw test splits from sklearn's bundled data; the venv is visible read-only in the sandbox
    import sklearn

    data = Path(sklearn.__file__).parent / "datasets" / "data"
    assert (data / "digits.csv.gz").is_file()  # there on the host
    code = SEED_BODY + (
        "\n_orig = construct_packing\n"
        "def construct_packing():\n"
        "    import os\n"
        f"    assert os.listdir({str(data)!r}) == [], 'bundled data visible'\n"
        f"    assert os.path.isfile({str(Path(sklearn.__file__))!r}), 'the package itself stays usable'\n"
        "    return _orig()\n"
    )
    res = run(tmp_path, code)
    assert res.valid, res.error
