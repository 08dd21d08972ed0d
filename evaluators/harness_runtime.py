"""Runs inside the sandbox, next to every suite's harness (copied there as ``_dgm_runtime.py``):
the program that starts a harness, and the start every harness shares.

    python -I -B _dgm_runtime.py _dgm_config.json

Isolated mode (``-I``) leaves the work directory off ``sys.path``; this puts it there (last), reads
the config and calls ``main(config)`` of ``_dgm_harness.py``. Its exit status is the harness's.
Standard library only at import time.
"""
import contextlib
import importlib
import json
import os
import sys
import traceback
import types

EXIT_VIOLATION = 3  # a broken budget or rule, explained in report.json; the evaluator reads it
REPORT = "report.json"


def launch(config_path):
    # Last, not first: the work directory holds the candidate's files, and a numpy.py or torch.py
    # there must not stand in for a module the harness (or torch itself) imports.
    sys.path.append(os.getcwd())
    sys.modules.setdefault("_dgm_runtime", sys.modules[__name__])  # harnesses import this very module
    with open(config_path) as f:
        config = json.load(f)
    return importlib.import_module("_dgm_harness").main(config)


def setup_torch(config):
    """(torch, device) for a torch harness: intra-op threads as the config says (default 1),
    denormals flushed, ``cuda`` only when the device is really there."""
    import torch

    lazy_dynamo()
    torch.set_flush_denormal(True)
    torch.set_num_threads(int(config.get("threads", 1)))
    device = config.get("device", "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        device = "cpu"
    return torch, device


def import_entry(entry):
    """The candidate's module (``entry`` as in agent.toml: ``packing.py`` or ``packing``)."""
    return importlib.import_module(entry[:-3] if entry.endswith(".py") else entry)


def take_inputs(path):
    """The arrays the evaluator wrote; the file is deleted once loaded, so the candidate, imported
    later, cannot read data meant for later tasks from the work directory."""
    import numpy as np

    with np.load(path, allow_pickle=False) as npz:
        data = {k: npz[k] for k in npz.files}
    os.remove(path)
    return data


class Violation(Exception):
    """A broken budget or rule, or unusable output: the candidate's fault, explained to the FM."""


def produce(work, out):
    """Run ``work(report) -> arrays`` (it fills ``report`` as it goes) and save the arrays to ``out``
    and the report to report.json; the exit status. A :class:`Violation` ends with status 3 and its
    reason in the report; any other exception prints its traceback (the evaluator shows the tail)."""
    report = {}
    try:
        arrays = work(report)
    except Violation as v:
        _write_report({**report, "violation": str(v)})
        print(f"budget or output violation: {v}", file=sys.stderr)
        return EXIT_VIOLATION
    except Exception:
        traceback.print_exc(limit=-8)
        return 1
    import numpy as np

    np.savez(out, **arrays)
    _write_report(report)
    return 0


def _write_report(report):
    with open(REPORT, "w") as f:
        json.dump(report, f)


def lazy_dynamo():
    """Eager code never needs ``torch._dynamo``, yet torch.optim and torch.func import it (about 1 s,
    as much as ``import torch``). A stub answers the no-op calls eager code makes; any other
    attribute (``torch.compile`` in a candidate, say) loads the real module."""
    if "torch._dynamo" in sys.modules:
        return
    stub = types.ModuleType("torch._dynamo")

    def disable(fn=None, recursive=True, **kwargs):
        return fn if fn is not None else (lambda f: f)

    def load_real(name):
        sys.modules.pop("torch._dynamo", None)
        return getattr(importlib.import_module("torch._dynamo"), name)

    stub.graph_break = lambda *a, **k: None
    stub.disable = disable
    stub.compiled_autograd = types.SimpleNamespace(_disable=contextlib.nullcontext)
    stub.__getattr__ = load_real
    sys.modules["torch._dynamo"] = stub


if __name__ == "__main__":
    sys.exit(launch(sys.argv[1]))
