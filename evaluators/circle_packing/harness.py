"""Runs inside the sandbox (started by ``_dgm_runtime.py``): import the candidate, call
construct_packing(), write the raw centres and radii to ``config["out"]``.

Only those numbers leave the sandbox; the evaluator recomputes everything from them.
"""
import json
import traceback


def main(config):
    from _dgm_runtime import import_entry

    try:
        produced = import_entry(config["entry"]).construct_packing()
        centers, radii = produced[0], produced[1]
        payload = {"centers": [[float(v) for v in c] for c in centers], "radii": [float(r) for r in radii]}
    except Exception:
        traceback.print_exc(limit=-6)
        return 1
    with open(config["out"], "w") as f:
        json.dump(payload, f)
    return 0
