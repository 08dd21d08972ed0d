"""Program memory: a program the campaign already evaluated is recognised, Python by its syntax
tree (comments, layout and a literal's spelling do not make a new program)."""

from orchestrator.memory import tree_digest

SEED = b'"""An update rule."""\nimport torch\n\nLR = 1e-2\n\n\ndef step(p, g):\n    return p - LR * g\n'


def test_comments_layout_and_literal_spelling_do_not_make_a_new_program():
    same = SEED.replace(b"LR = 1e-2", b"LR = 0.01  # the learning rate").replace(b"p - LR * g", b"(p - LR*g)")
    assert tree_digest({"rule.py": same, "agent.toml": b"x"}) == tree_digest({"rule.py": SEED, "agent.toml": b"x"})


def test_a_changed_number_a_changed_non_python_file_or_a_new_file_is_a_new_program():
    base = tree_digest({"rule.py": SEED, "agent.toml": b"x"})
    assert tree_digest({"rule.py": SEED.replace(b"1e-2", b"2e-2"), "agent.toml": b"x"}) != base
    assert tree_digest({"rule.py": SEED, "agent.toml": b"y"}) != base
    assert tree_digest({"rule.py": SEED, "agent.toml": b"x", "improve.py": b"pass\n"}) != base
    # a file that does not parse counts by its bytes, so two different broken files differ
    assert tree_digest({"rule.py": b"def (:\n"}) != tree_digest({"rule.py": b"def ((:\n"})
