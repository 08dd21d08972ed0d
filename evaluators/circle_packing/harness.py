"""Runs inside the sandbox: import the candidate, call construct_packing(), write result.json.

Only the raw centres and radii leave the sandbox; the evaluator recomputes everything from them.
"""
import json
import sys
import traceback


def main(entry: str, out: str) -> int:
    sys.path.insert(0, ".")
    try:
        import importlib

        module = importlib.import_module(entry[:-3] if entry.endswith(".py") else entry)
        produced = module.construct_packing()
        centers, radii = produced[0], produced[1]
        payload = {"centers": [[float(v) for v in c] for c in centers], "radii": [float(r) for r in radii]}
    except Exception:
        traceback.print_exc(limit=-6)
        return 1
    with open(out, "w") as f:
        json.dump(payload, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
