"""Runs inside the sandbox (started by ``_dgm_runtime.py``), once per problem: import the agent,
call ``solve(problem)``, write the code it returns to ``config["out"]``.

The problem is its prompt, entry point and task id, plus ``budget`` (model calls and tokens, seconds
of wall clock for this problem). The agent reaches the model through ``DGM_FM_SOCKET``. No test is
in the work directory; the evaluator grades the code elsewhere. Exit status 4: the agent does not
import (the candidate is broken, not this problem).
"""
import json
import time
import traceback

EXIT_IMPORT = 4
MAX_SOLUTION = 64 * 1024


def main(config):
    from _dgm_runtime import import_entry

    out = {"task_id": config["problem"]["task_id"]}
    try:
        agent = import_entry(config["entry"])
        solve = agent.solve
    except BaseException:  # noqa: BLE001 - whatever the agent's module does on import
        traceback.print_exc(limit=-6)
        return EXIT_IMPORT
    t0 = time.monotonic()
    try:
        code = solve(dict(config["problem"], budget=dict(config["budget"])))
        if not isinstance(code, str):
            raise TypeError(f"solve() returned a {type(code).__name__}, not the code as a str")
        out["solution"] = code[:MAX_SOLUTION]
    except BaseException as e:  # noqa: BLE001 - an agent's failure on one problem costs that problem
        traceback.print_exc(limit=-4)
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        out["error"] = f"solve() raised {type(e).__name__}" + (f": {first}" if first else "")
    out["wall_s"] = round(time.monotonic() - t0, 3)
    with open(config["out"], "w") as f:
        json.dump(out, f)
    return 0
