"""This agent's improver: it writes the agent's next version (dgm's ``self`` operator runs it).

It reads the task and the agent's public results (``DGM_RECORD``), picks one file of the agent
(now and then one of its own files: the improver may improve itself) and one function or class in
it, asks the model for a new version of that definition, merges it in, checks that it compiles,
and, if the answer is unusable (cut off, no code, does not parse, no change), tells the model why in
the same conversation and asks again. It edits the agent in place (``DGM_AGENT``); the tree it
leaves behind is the child.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tomllib
from pathlib import Path

import improver_kit as kit

SELF_SHARE = 0.15  # how often it works on its own code instead of the program
TRIES = 3  # answers asked for before giving up: the first, then repairs told what was wrong


def main() -> int:
    agent = Path(os.environ["DGM_AGENT"])
    record = json.loads(Path(os.environ["DGM_RECORD"]).read_text())
    rng = random.Random(int(os.environ.get("DGM_SEED", "0")))
    manifest = tomllib.loads((agent / "agent.toml").read_text())["agent"]
    own = [manifest["self_improve"], "improver_kit.py"]
    about_itself = rng.random() < SELF_SHARE
    path = rng.choice([p for p in own if (agent / p).is_file()] if about_itself else manifest["editable"])
    old = (agent / path).read_text()
    function = kit.pick_function(old, rng)
    messages = kit.build_prompt(record, path, old, about_itself=about_itself, function=function)
    temperature = 0.7
    for attempt in range(TRIES):
        try:
            answer, finish = kit.chat(messages, seed=rng.randrange(2**31), temperature=temperature)
        except kit.BudgetSpent as e:
            print(f"stopped: {e}")
            return 0
        try:
            if finish == "length":
                raise ValueError("the answer was cut off before its end (too long)")
            new = kit.apply_answer(old, answer, function)
            if new.strip() == old.strip():
                temperature = min(1.0, temperature + 0.15)  # it copied the code: sample more freely
                raise ValueError("the change is identical to the current file")
            compile(new, path, "exec")
        except (ValueError, SyntaxError) as e:
            error = f"{type(e).__name__}: {e}"
            print(f"answer {attempt + 1} unusable: {error}")
            # the same conversation goes on, so the model sees what it wrote and why it failed
            messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": kit.repair_request(error, function)}]
            continue
        (agent / path).write_text(new)
        print(f"changed {path}{f' ({function})' if function else ''}: {answer.strip().splitlines()[0][:120] if answer.strip() else ''}")
        return 0
    print(f"no usable change to {path} after {TRIES} answers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
