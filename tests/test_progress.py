from rich.console import Console

from orchestrator.campaign import Stats
from orchestrator.progress import Progress, render


def test_render_shows_the_numbers_a_user_watches():
    stats = Stats(target=30, started=12, proposing=2, evaluating=1,
                  counts={"admitted": 5, "rejected": 1, "invalid": 4, "failed": 1},
                  best_score=0.91234, best_node=7, seed_score=0.659, fm_calls=11, tokens=12345, cost_usd=0.0123,
                  elapsed_s=3725, last_event="node 12: admitted score 0.9")
    console = Console(record=True, width=120)
    console.print(render(stats))
    text = console.export_text()
    for expected in ("12/30", "2 proposing, 1 evaluating", "5 admitted", "4 invalid", "1 failed",
                     "0.9123 (node 7)", "seed 0.6590", "11 calls, 12,345 tokens, $0.0123", "01:02:05", "node 12: admitted"):
        assert expected in text


def test_plain_mode_prints_each_event_once():
    console = Console(record=True, width=120, force_terminal=False)
    progress = Progress(console, live=False)
    with progress:
        for event in ("node 1: invalid", "node 1: invalid", "node 2: admitted score 0.7"):
            progress.update(Stats(target=3, started=2, last_event=event))
    lines = console.export_text().strip().splitlines()
    assert lines == ["[2/3] node 1: invalid  (best -)", "[2/3] node 2: admitted score 0.7  (best -)"]
