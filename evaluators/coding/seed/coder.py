"""A coding agent: ``solve(problem)`` returns the code of the function the problem asks for.

Its tool loop: ask the model for a draft, run the docstring's ``>>>`` examples on it, and while some
fail (and the problem's model budget and time allow), show the model the failures and ask for a
fix. It returns the draft that failed the fewest examples. The helpers (model client, example extraction
and runner, code extraction) are in coder_tools.py.
"""

import time

import coder_tools as tools

SYSTEM = (
    "You are an expert Python programmer. Complete the function the user gives you. Answer with ONE "
    "```python code block holding the complete function, with its imports and any helper functions it needs. "
    "Do not add tests, example calls or explanations."
)
TEMPERATURES = (0.2, 0.6, 0.8)  # first draft, then repairs
REPAIR_BEFORE = 0.5  # start a repair only while less than this share of the problem's time is used


def draft_request(problem):
    return f"Complete this Python function:\n```python\n{problem['prompt'].rstrip()}\n```"


def repair_request(failures):
    listed = "\n".join(f"- {f}" for f in failures[:5])
    return (f"Your code is wrong:\n{listed}\n"
            "Think about why, then answer with the complete corrected function in ONE ```python code block.")


def solve(problem):
    budget = problem.get("budget", {})
    calls = int(budget.get("calls", 2))
    max_tokens = int(budget.get("max_tokens", 512))
    wall_s = float(budget.get("wall_s", 240))
    deadline = time.monotonic() + wall_s - 5  # the run is killed at wall_s: return before that
    examples = tools.doctest_examples(problem["prompt"])
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": draft_request(problem)}]
    best, best_failures = "", None
    for attempt in range(calls):
        left = deadline - time.monotonic()
        if attempt and left < wall_s * (1 - REPAIR_BEFORE):
            break  # too little time for another answer: keep the best so far
        try:
            answer = tools.chat(messages, max_tokens=max_tokens, temperature=TEMPERATURES[min(attempt, len(TEMPERATURES) - 1)],
                                timeout=max(left, 1.0))
        except tools.ModelUnavailable:
            break
        code = tools.extract_code(answer, problem)
        failures = tools.run_examples(code, problem, examples)
        if best_failures is None or len(failures) < len(best_failures):
            best, best_failures = code, failures
        if not failures:
            break
        messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": repair_request(failures)}]
    return best
