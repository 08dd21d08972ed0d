from orchestrator.admission import AdmissionRule, Candidate, keep_all_valid, keep_better, resolve


def cand(score=0.5, changed=True, complete=True, parent=0.6, seed=0.55):
    return Candidate(complete, changed, score, parent, seed)


def test_keep_all_valid():
    rule = AdmissionRule()
    assert keep_all_valid(cand(score=0.01), rule).admit
    d = keep_all_valid(cand(changed=False), rule)
    assert not d.admit and d.reason == "no change from the parent"
    d = keep_all_valid(cand(complete=False, score=None), rule)
    assert not d.admit and "every stage" in d.reason


def test_keep_better_against_seed_with_leeway():
    rule = AdmissionRule(leeway=0.1, reference="seed")
    assert keep_better(cand(score=0.45), rule).admit  # 0.45 >= 0.55 - 0.1
    d = keep_better(cand(score=0.44), rule)
    assert not d.admit and "0.4400 < seed 0.5500" in d.reason


def test_keep_better_against_parent():
    rule = AdmissionRule(leeway=0.0, reference="parent")
    assert keep_better(cand(score=0.6), rule).admit
    assert not keep_better(cand(score=0.59), rule).admit


def test_keep_better_still_needs_change_and_completion():
    rule = AdmissionRule()
    assert not keep_better(cand(score=0.99, changed=False), rule).admit
    assert not keep_better(cand(score=None, complete=False), rule).admit


def test_resolve():
    assert resolve("keep_better") is keep_better
