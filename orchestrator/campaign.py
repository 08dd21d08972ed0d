"""The campaign loop: select → propose → record → evaluate → judge, until the iterations or a budget
run out.

Proposals (FM calls) and evaluations (sandboxed runs) overlap in two pools; the main thread alone
writes the archive, so every write is ordered and every attempt is a row and a commit the moment it
exists. A crash loses only what is in flight; ``run`` again re-evaluates nodes left half-done.

Each box of the loop lives in its own module: ``plan`` (what the config names), ``ledger`` (nodes
and their totals), ``context`` (what a proposal sees), ``memory`` (programs already evaluated),
``verdict`` (the node's status), ``executor`` (where evaluations run).
"""

from __future__ import annotations

import errno
import random
import sqlite3
import textwrap
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from archive import Archive, Node, NodeStatus
from evaluators.agent import AgentManifestError, load_manifest
from evaluators.pipeline import EvaluationResult
from orchestrator import selection
from orchestrator.agent_files import AgentFiles, editable_texts
from orchestrator.budget import Usage, exhausted
from orchestrator.config import CampaignConfig
from orchestrator.context import ContextBuilder
from orchestrator.errors import CampaignError
from orchestrator.events import NodeEvent
from orchestrator.executor import EvalJob, EvaluationEnvironment, Executor, SandboxSpec, make_executor
from orchestrator.ledger import Ledger
from orchestrator.memory import ProgramMemory, tree_digest
from orchestrator.mutation.operators import DUPLICATE, Operator, Proposal, Sampling
from orchestrator.mutation.prompts import ProposalContext
from orchestrator.plan import CampaignPlan
from orchestrator.verdict import judge
from sandboxes import allow_runs, stop_all

__all__ = ["Campaign", "CampaignError", "Stats"]

SEED_ID = 0


@dataclass
class Stats:
    """What the progress display shows and ``run`` returns."""

    target: int = 0
    started: int = 0  # child attempts recorded or in flight (the seed excluded)
    proposing: int = 0
    evaluating: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # status → nodes
    best_score: float | None = None
    best_node: int | None = None
    seed_score: float | None = None
    fm_calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    elapsed_s: float = 0.0
    stop_reason: str = ""
    last_event: str = ""


@dataclass
class PendingProposal:
    """A proposal on its way: what it started from."""

    parent_id: int
    operator: str
    ctx: ProposalContext
    select_s: float
    max_calls: int  # the most FM calls it may make (budgets count them as made while it runs)
    trial_gpu_s: list[float] = field(default_factory=lambda: [0.0])  # GPU-seconds of its trial evaluations (fit)


@dataclass
class PendingEvaluation:
    node_id: int
    submitted: float  # time.monotonic()
    draws: list[EvaluationResult] = field(default_factory=list)  # independent evaluations so far


def evaluation_seed(random_seed: int) -> int:
    """The evaluation seed of a campaign's first draw of every node (draw k runs on this + k): a
    script that measures a run's programs again on the same seeds (pairing them with the run's own
    draws) reads it here."""
    return random.Random(f"eval-{random_seed}").randrange(2**31)


class Campaign:
    def __init__(
        self,
        cfg: CampaignConfig,
        run_dir: Path,
        fm: Any,
        *,
        plan: CampaignPlan | None = None,
        executor: Executor | None = None,
        on_update: Callable[[Stats], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.fm = fm
        self.plan = plan or CampaignPlan.from_config(cfg)
        self.evaluator = self.plan.evaluator
        self.operators: dict[str, Operator] = self.plan.operators
        self.executor = executor or make_executor(cfg.evaluation, EvaluationEnvironment(fm=fm), evaluator=self.evaluator)
        self.on_update = on_update or (lambda stats: None)
        self.sandbox = SandboxSpec(cfg.sandbox.backend, cfg.sandbox.trusted, cfg.evaluation.use_gpu,
                                   cfg.evaluation.evals_per_gpu, cfg.sandbox.disk, cfg.sandbox.inodes)
        self.eval_seed = evaluation_seed(cfg.campaign.random_seed)
        self.rng = random.Random()  # seeded in run(), from the number of nodes already there
        self.stats = Stats()
        uses_clades = any(getattr(p, "uses_clades", False) for p in (self.plan.select, *self.plan.select_for.values()))
        self.ledger = Ledger(confidence=cfg.admission.confidence, clades=uses_clades)
        self.files = AgentFiles()
        self.memory = ProgramMemory()
        self.context = ContextBuilder(
            self.evaluator.task, [*self.evaluator.ideas, *cfg.mutation.ideas], cfg.mutation, self.ledger,
            self.files.texts, self.files.tree,
        )
        self.archive: Archive | None = None
        self.prior_wall_s = 0.0  # wall-clock of earlier runs of this campaign (resumes)
        self._t0 = time.monotonic()

    @property
    def nodes(self) -> dict[int, Node]:
        return self.ledger.nodes

    # ---- the loop ---------------------------------------------------------------------

    def run(self, iterations: int | None = None) -> Stats:
        """Run (or resume) until ``iterations`` child attempts exist or a budget runs out."""
        target = self.cfg.campaign.iterations if iterations is None else iterations
        self._t0 = time.monotonic()
        allow_runs()  # a campaign interrupted earlier in this process (a notebook) refused new runs
        try:
            self.archive = self._open_archive()
        except BaseException:
            self.executor.shutdown(wait=False)  # e.g. a Ray cluster started for this campaign
            raise
        self.files.archive = self.archive
        interrupted = False
        try:
            with self.ledger.loading():
                for node in self.archive.nodes():  # in id order: observers see parents first
                    self._record(node)
            self.rng.seed(f"{self.cfg.campaign.random_seed}-{len(self.ledger)}")
            self.prior_wall_s = float(self.archive.get_meta("wall_s", "0") or 0)
            self.stats.target = target
            self._ensure_seed()
            self._loop(target)
            self.stats.stop_reason = self.stats.stop_reason or f"reached {target} iterations"
            self._refresh(0, 0)
            return self.stats
        except KeyboardInterrupt:
            interrupted = True
            # end the sandboxed runs in flight (evaluations, improvers) now: their threads are
            # joined at exit, and nothing they would return is recorded any more
            stopped = stop_all()
            self.stats.stop_reason = (f"interrupted: {stopped} sandboxed runs in flight ended; "
                                      "their nodes are re-evaluated on resume")
            raise
        except (OSError, sqlite3.OperationalError) as e:
            if not _disk_full(e):
                raise
            interrupted = True  # do not wait for work in flight: nothing more can be written
            self.stats.stop_reason = f"the run directory's disk is full ({e})"
            raise CampaignError(
                f"{self.run_dir}: the disk is full ({e}); every node written so far is kept. "
                "Free some space and run the same command again to resume."
            ) from None
        finally:
            # on Ctrl-C do not wait for in-flight work: a resume re-evaluates it
            self.executor.shutdown(wait=not interrupted)
            self._save_wall()
            self.archive.close()

    def remeasure(self, node_ref: int | str, draws: int) -> tuple[Node, list[str]]:
        """Evaluate a scored node ``draws`` more times, on evaluation seeds it has not had: the
        explicit re-measurement of a known program (never a proposal, so never a duplicate). Its
        draws, mean score and held-out draws grow; its verdict stays. ``node_ref``: an id or
        ``"best"``. Returns the node as recorded and the reasons of draws that did not complete."""
        self.archive = self._open_archive()  # the run's writer lock: not while a campaign runs it
        self.files.archive = self.archive
        try:
            with self.ledger.loading():
                for n in self.archive.nodes():
                    self._record(n)
            node = self.ledger.best if node_ref == "best" else self.ledger.get(int(node_ref))
            if node is None:
                raise CampaignError(f"{self.run_dir}: no node {node_ref!r} (ids 0..{len(self.ledger) - 1}, or 'best')")
            if node.score is None or not node.draws:
                raise CampaignError(f"{self.run_dir}: node {node.id} is {node.status.value} without a score: "
                                    "only a scored node can be measured again")
            # the next unused evaluation seed: a draw that failed here before is not kept, but its
            # seed was used (repeating it would repeat its result as a new draw)
            offsets = node.seed_offsets
            first = max(len(node.draws) + int(node.timings.get("remeasure_failed", 0)), max(offsets) + 1)
            results = [f.result() for f in [self.executor.submit(self._job(node.id, first + k)) for k in range(draws)]]
            done = [r for r in results if r.complete]
            failed = [f"draw {first + k}: {r.error or r.feedback}" for k, r in enumerate(results) if not r.complete]
            if done:
                scores = [*node.draws, *(r.score for r in done)]
                seeds = [*offsets, *(first + k for k, r in enumerate(results) if r.complete)]
                before = node.private_draws or {k: [v] for k, v in node.private_metrics.items()}
                private = {k: [*v, *(float(r.private_metrics[k]) for r in done)] for k, v in before.items()
                           if all(k in r.private_metrics for r in done)}
            timings = {**node.timings, "remeasured": node.timings.get("remeasured", 0.0) + len(done),
                       "remeasure_failed": node.timings.get("remeasure_failed", 0.0) + len(failed)}
            usage = _with_evaluation_fm_usage(node, results, timings)  # a failed draw's calls were made too
            if done:
                node = self._record(self.archive.update_node(
                    node.id, draws=scores, draw_seeds=seeds, score=sum(scores) / len(scores), private_draws=private,
                    timings=timings,
                    **usage))
            else:
                node = self._record(self.archive.update_node(node.id, timings=timings, **usage))
            return node, failed
        finally:
            self.executor.shutdown(wait=True)
            self.archive.close()

    def _loop(self, target: int) -> None:
        proposing: dict[Future, PendingProposal] = {}
        evaluating: dict[Future, PendingEvaluation] = {}
        fm_pool = ThreadPoolExecutor(self.cfg.fm.concurrency, thread_name_prefix="dgm-fm")
        try:
            for node_id in self._recover():
                self._evaluate(node_id, evaluating)
            while True:
                self._refresh(len(proposing), len(evaluating))
                while self._may_propose(proposing, evaluating, target):
                    fut, pending = self._submit_proposal(fm_pool, self._calls_in_flight(proposing))
                    if fut.done():  # no FM call: record it now, so the next draw knows its program
                        self._evaluate(self._record_proposal(fut, pending), evaluating)
                    else:
                        proposing[fut] = pending
                if not proposing and not evaluating:
                    return
                done, _ = wait([*proposing, *evaluating], return_when=FIRST_COMPLETED)
                for fut in done:
                    if fut in proposing:
                        self._evaluate(self._record_proposal(fut, proposing.pop(fut)), evaluating)
                    else:
                        pending = evaluating.pop(fut)
                        if self._record_evaluation(fut, pending):  # raced: one more evaluation
                            evaluating[self.executor.submit(self._job(pending.node_id, len(pending.draws)))] = pending
        finally:
            fm_pool.shutdown(wait=not proposing, cancel_futures=True)

    def _may_propose(self, proposing: dict, evaluating: dict, target: int) -> bool:
        if self.stats.stop_reason:
            return False
        if self.stats.started >= target:
            return False
        # calls in flight count as made, at the most each attempt may make (a repair turn, an improver
        # run's calls), so a budget is never overshot
        reason = exhausted(self._usage(in_flight=self._calls_in_flight(proposing)), self.cfg.budget)
        if reason:
            if not proposing:  # what is spent, spent: stop
                self.stats.stop_reason = reason
            return False  # else wait: the attempts in flight may make fewer calls than they could
        # keep the FM busy, but do not queue more evaluations than workers can take
        return len(proposing) < self.cfg.fm.concurrency and len(evaluating) <= self.cfg.evaluation.workers

    # ---- archive ----------------------------------------------------------------------

    def _open_archive(self) -> Archive:
        if (self.run_dir / "archive.db").exists():
            archive = Archive.open(self.run_dir)
            if archive.campaign != self.cfg.campaign.name:
                archive.close()
                raise CampaignError(
                    f"{self.run_dir} holds campaign {archive.campaign!r}, not {self.cfg.campaign.name!r}; "
                    "use another --run-dir or the same [campaign].name"
                )
        else:
            archive = Archive.create(self.run_dir, self.cfg.campaign.name)
        # the config this run works under (a resume may change budgets): what `dgm status` shows
        try:
            archive.set_meta("config", self.cfg.model_dump_json(exclude={"base_dir"}))
        except (OSError, sqlite3.OperationalError) as e:
            if not _disk_full(e):
                raise  # a full disk keeps the last run's config; the loop then stops cleanly
        return archive

    def _record(self, node: Node) -> Node:
        """Every node written or read back goes through here: the ledger, then the observers."""
        self.ledger.record(node)
        event = NodeEvent(node, self.ledger.get(node.parent_id), self.files.texts_or_none, self.files.tree)
        self.memory.observe(event)
        for op in self.operators.values():
            op.observe(event)
        return node

    def _ensure_seed(self) -> None:
        seed = self.ledger.seed
        if seed is None:
            seed_dir = self.cfg.campaign.seed_agent or self.evaluator.seed_agent()
            load_manifest(seed_dir)  # a broken seed fails here, with the file and field named
            seed = self.archive.add_node(
                parent_id=None, status=NodeStatus.EVALUATING, operator="seed", src_dir=seed_dir,
                message=f"seed agent from {seed_dir}",
            )
            seed = self._record(self.archive.update_node(seed.id, digest=tree_digest(self.files.tree(seed.id))))
        if not seed.status.finished:
            self._emit(f"evaluating the seed agent (node {SEED_ID})")
            pending = PendingEvaluation(SEED_ID, time.monotonic())
            while self._record_evaluation(self.executor.submit(self._job(SEED_ID, len(pending.draws))), pending):
                pass  # evaluated again on new evaluation seeds: the campaign's measure of noise
            seed = self.ledger.seed
        if seed.status != NodeStatus.ADMITTED:
            raise CampaignError(f"the seed agent is {seed.status.value}: {seed.error or seed.feedback}")
        self.stats.seed_score = seed.score

    def _recover(self) -> list[int]:
        report = self.archive.recover()
        pending = [i for i in report.in_flight if i != SEED_ID]
        if pending:
            self._emit(f"resuming: re-evaluating nodes {pending} left in flight")
        return pending

    # ---- proposals --------------------------------------------------------------------

    @staticmethod
    def _calls_in_flight(proposing: dict) -> int:
        """FM calls the attempts in flight may still make, counted as made (a budget is never overshot)."""
        return sum(p.max_calls for p in proposing.values())

    def _submit_proposal(self, pool: ThreadPoolExecutor, in_flight: int = 0) -> tuple[Future, PendingProposal]:
        t0 = time.perf_counter()
        name, parent = self._draw()
        op = self.operators[name]
        ctx = self.context.build(parent, self.rng)
        limit = self.cfg.budget.max_fm_calls
        calls_left = None if limit is None else max(1, limit - self.ledger.usage.fm_calls - in_flight)
        sampling = Sampling(
            self.cfg.fm.sample_temperature(self.rng), self.rng.randrange(2**31), self.cfg.fm.max_tokens,
            tokens_left=None if self.cfg.budget.max_tokens is None else self._tokens_left(self.cfg.budget.max_tokens),
            calls_left=calls_left,
        )
        trial_gpu_s = [0.0]
        ctx.evaluate = self._trial_evaluator(parent.id, trial_gpu_s)
        ctx.check = self._trial_evaluator(parent.id, trial_gpu_s, first_stage_only=True)
        tree = ctx.tree  # the parent's, read here on the loop's thread; the lookup is one dict read
        ctx.known = lambda files: self.memory.duplicate_of({**tree, **{p: t.encode() for p, t in files.items()}})
        self.stats.started += 1
        op.started(ctx)
        if not op.inline:
            fut = pool.submit(_timed, op.propose, ctx, self.fm, sampling)
        else:  # instant: run it here rather than race the next draw
            fut = Future()
            try:
                fut.set_result(_timed(op.propose, ctx, self.fm, sampling))
            except Exception as e:  # recorded as a failed attempt, like an FM error
                fut.set_exception(e)
        max_calls = op.max_calls if calls_left is None else min(op.max_calls, calls_left)
        return fut, PendingProposal(parent.id, name, ctx, time.perf_counter() - t0, max_calls, trial_gpu_s)

    def _trial_evaluator(self, parent_id: int, gpu_s: list[float],
                         first_stage_only: bool = False) -> Callable[[dict[str, str]], Future]:
        """For operators that search by evaluating (``fit``), or check that an answer runs (the FM
        operators, ``first_stage_only``): a trial program (the parent with some files changed)
        evaluated by the executor like a node, but recorded only on the child, whose GPU-seconds
        (``gpu_s[0]``) count the trials'."""
        base = self.files.tree(parent_id)

        def spent(fut: Future) -> None:
            if not fut.cancelled() and fut.exception() is None:
                gpu_s[0] += fut.result().gpu_s

        def evaluate(changed: dict[str, str]) -> Future:
            job = self._job(parent_id)
            job.files = {**base, **{p: t.encode() for p, t in changed.items()}}
            job.first_stage_only = first_stage_only
            fut = self.executor.submit(job)
            fut.add_done_callback(spent)
            return fut

        return evaluate

    def _draw(self) -> tuple[str, Node]:
        """An operator by weight and a parent it can work from; an operator with no such parent
        yet gives way to the others."""
        weights = {n: w for n, w in self.plan.weights.items() if w > 0}
        while True:
            name = self.rng.choices(list(weights), weights=list(weights.values()))[0]
            parent = self._select_parent(self.operators[name])
            if parent is not None:
                return name, parent
            del weights[name]  # a standalone operator always finds the seed, so this ends

    def _select_parent(self, op: Operator) -> Node | None:
        """A parent for ``op`` by its selection policy, over the ledger's arrays (the lower bound
        stands for the score); a selective operator's parent must also be one it can work from."""
        ids, bound, children = self.ledger.parent_arrays()
        if len(ids) == 0:
            return None
        policy = self.plan.select_for.get(op.name, self.plan.select)
        if not op.selective:
            return self.ledger.nodes[int(ids[selection.sample(self._probs(policy, ids, bound, children), self.rng)[0]])]
        works = lambda n: (t := self.files.texts_or_none(n.id)) is not None and op.can_work_from(t)  # noqa: E731
        if policy in selection.PER_NODE:  # p_i depends on node i alone: draw, and redraw if it cannot work from it
            probs = self._probs(policy, ids, bound, children)
            for _ in range(32):
                node = self.ledger.nodes[int(ids[selection.sample(probs, self.rng)[0]])]
                if works(node):
                    return node
        keep = [i for i, node_id in enumerate(ids) if works(self.ledger.nodes[int(node_id)])]
        if not keep:
            return None
        ids, bound, children = ids[keep], bound[keep], children[keep]
        return self.ledger.nodes[int(ids[selection.sample(self._probs(policy, ids, bound, children), self.rng)[0]])]

    def _probs(self, policy: selection.Policy, ids, bound, children):
        if getattr(policy, "uses_clades", False):
            return policy(bound, children, clades=[self.ledger.clade(int(i)) for i in ids], rng=self.rng)
        return policy(bound, children)

    def _record_proposal(self, fut: Future, pending: PendingProposal) -> int | None:
        """Write the attempt as a node; return its id when it should be evaluated."""
        t0 = time.perf_counter()
        parent_id, op = pending.parent_id, pending.operator
        try:
            proposal, propose_s = fut.result()
        except Exception as e:  # FMError, or a bug in an operator: the campaign goes on
            kind = getattr(e, "kind", type(e).__name__)
            detail = str(e) if hasattr(e, "kind") else traceback.format_exc(limit=-3)
            node = self._record(self.archive.add_node(
                parent_id=parent_id, status=NodeStatus.FAILED, operator=op,
                message=f"{op} attempt failed: {kind}", error=f"FM call failed ({kind}): {detail}",
                fm_model=self.cfg.fm.model, timings={"select_s": pending.select_s},
            ))
            self._emit(f"node {node.id}: FM call failed ({kind})")
            return None
        c = proposal.completion
        idea = pending.ctx.idea.strip()
        common = dict(
            operator=op, fm_model=(getattr(c, "model", "") or self.cfg.fm.model) if c is not None else "", prompt=proposal.prompt,
            # only an idea the model was shown is credited (fit and the improvers draw one and show none)
            idea=idea if idea and idea in proposal.prompt else "",
            response=proposal.response, prompt_tokens=getattr(c, "prompt_tokens", 0),
            completion_tokens=getattr(c, "completion_tokens", 0), cost_usd=getattr(c, "cost_usd", 0.0),
        )
        timings = {"select_s": pending.select_s, "propose_s": propose_s, "fm_s": getattr(c, "latency_s", 0.0),
                   "fm_calls": float(getattr(c, "calls", 1) if c is not None else 0), "gpu_s": pending.trial_gpu_s[0],
                   **proposal.counts}
        tree, texts = self._child_tree(parent_id, proposal)
        if not proposal.valid:
            node = self._record(self.archive.add_node(
                parent_id=parent_id, status=NodeStatus.INVALID, message=f"invalid {op} proposal: {proposal.error}",
                error=proposal.error, feedback=proposal.error, timings=timings, **common,
            ))
            # cut with a mark, so a reason cut inside a quotation does not read as an empty one
            self._emit(f"node {node.id}: invalid proposal ({textwrap.shorten(proposal.error, 90, placeholder=' …')})")
            return None
        timings["archive_s"] = time.perf_counter() - t0
        node = self.archive.add_node(
            parent_id=parent_id, status=NodeStatus.EVALUATING, files=tree, message=proposal.summary,
            timings=timings, **common,
        )
        self.files.remember(node.id, tree, texts)
        node = self.archive.update_node(node.id, digest=tree_digest(tree),
                                        timings={**timings, "archive_s": time.perf_counter() - t0})
        self._record(node)  # its program counts from now, before its score is in
        return node.id

    def _child_tree(self, parent_id: int, proposal: Proposal) -> tuple[dict[str, bytes] | None, dict[str, str] | None]:
        """The child's whole tree and editable texts; a proposal of a program the archive already
        evaluated (or has in flight) is made invalid, so no evaluation is spent on it."""
        if not proposal.valid:
            return None, None
        if proposal.tree is not None:  # the operator wrote the whole tree (the agent's own improver)
            tree = proposal.tree
        else:
            tree = {**self.files.tree(parent_id), **{p: t.encode() for p, t in proposal.files.items()}}
        twin = self.memory.duplicate_of(tree)
        try:
            texts = editable_texts(tree, f"node {parent_id}'s child")
        except AgentManifestError:  # a broken agent.toml: the evaluation will say so
            texts = None
        if twin is not None:
            proposal.files, proposal.error = None, DUPLICATE.format(node=twin)
            return None, None
        return tree, texts

    # ---- evaluations ------------------------------------------------------------------

    def _job(self, node_id: int, draw: int = 0) -> EvalJob:
        """The evaluation of a node; ``draw`` > 0 re-measures it on another evaluation seed."""
        return EvalJob(
            node_id=node_id, files=self.files.tree(node_id), evaluator=self.cfg.evaluator.name,
            evaluator_options=self.cfg.evaluator.options, stages=self.cfg.evaluator.stages,
            sandbox=self.sandbox, seed=self.eval_seed + draw, fm_calls=self.cfg.evaluation.fm_calls,
            fm_tokens=self._tokens_left(self.cfg.evaluation.fm_tokens),
        )

    def _tokens_left(self, limit: int) -> int:
        """``limit``, or less when the campaign's token budget has less left."""
        budget = self.cfg.budget.max_tokens
        return limit if budget is None else max(0, min(limit, budget - self.ledger.usage.tokens))

    def _evaluate(self, node_id: int | None, evaluating: dict[Future, PendingEvaluation]) -> None:
        """Send a recorded node to the executor (None: nothing to evaluate)."""
        if node_id is not None:
            evaluating[self.executor.submit(self._job(node_id))] = PendingEvaluation(node_id, time.monotonic())

    def _record_evaluation(self, fut: Future, pending: PendingEvaluation) -> bool:
        """Record one finished evaluation of a node. True when the node should be evaluated once
        more (the seed measuring noise, or a challenger being raced) before its verdict."""
        t0 = time.perf_counter()
        node_id = pending.node_id
        node = self.ledger.nodes[node_id]
        try:
            result: EvaluationResult = fut.result()
        except Exception:
            self._record(self.archive.update_node(
                node_id, status=NodeStatus.FAILED, error=f"evaluation crashed:\n{traceback.format_exc(limit=-4)}"
            ))
            self._emit(f"node {node_id}: evaluation crashed")
            return False
        pending.draws.append(result)
        if self._wants_another_draw(node, pending.draws):
            self._emit(f"node {node_id}: score {result.score:.4f}, evaluating again ({len(pending.draws) + 1})")
            return True
        first, worst = pending.draws[0], _first_failing(pending.draws)
        draws = [d.score for d in pending.draws]
        score = sum(draws) / len(draws) if worst is None else None
        parent = self.ledger.get(node.parent_id)
        bound = self.ledger.lcb
        verdict = judge(
            node, worst or first, parent=parent, seed=self.ledger.seed,
            changed=parent is None or self.files.tree(node.id) != self.files.tree(parent.id),
            policy=self.plan.admit, rule=self.plan.admit_rule, bound=bound,
            score=None if score is None else bound(node.model_copy(update={"score": score, "draws": draws})),
        )
        result = worst or first
        summed = _summed_timings(pending.draws)
        timings = {**node.timings, **summed, "eval_wall_s": time.monotonic() - pending.submitted,
                   "gpu_s": node.timings.get("gpu_s", 0.0) + summed.get("gpu_s", 0.0)}  # fit's trials, then its draws
        fields = dict(
            status=verdict.status, error=verdict.reason, stages=[s.to_record() for s in result.stages],
            public_metrics=result.public_metrics, private_metrics=result.private_metrics,
            score=score, draws=draws if score is not None else [], feedback=result.feedback,
            draw_seeds=list(range(len(draws))) if score is not None else [],  # draw k ran on offset k
            private_draws=_private_draws(pending.draws) if score is not None else {},
        )
        fields.update(_with_evaluation_fm_usage(node, pending.draws, timings))
        timings["archive_s"] = timings.get("archive_s", 0.0) + (time.perf_counter() - t0)
        self._record(self.archive.update_node(node_id, timings=timings, **fields))
        shown = "" if score is None else f" score {score:.4f}" + (f" (mean of {len(draws)})" if len(draws) > 1 else "")
        self._emit(f"node {node_id}: {verdict.status.value}{shown}")
        return False

    def _wants_another_draw(self, node: Node, draws: list[EvaluationResult]) -> bool:
        """Measure noise on the seed; race a child whose first score could make it the best."""
        last = draws[-1]
        if not last.complete:  # invalid, gated or broken: the verdict needs no more draws
            return False
        n, adm = len(draws), self.cfg.admission
        if node.parent_id is None:
            if n >= 2 and all(d.score == draws[0].score and d.public_metrics == draws[0].public_metrics for d in draws):
                # a deterministic evaluator: nothing to measure. Every public metric must agree, not
                # only the score: a coarse score (10 of 12 problems) repeats by chance while its
                # other metrics (tokens, seconds) show the evaluation is not deterministic
                return False
            return n < adm.noise_evals
        if adm.race <= 1 or self.ledger.spread == 0.0 or n >= adm.race:
            return False
        if n > 1:
            return True  # a race, once started, runs to the end
        best = self.ledger.best
        return best is None or draws[0].score > self.ledger.lcb(best)

    # ---- bookkeeping ------------------------------------------------------------------

    def _usage(self, in_flight: int = 0) -> Usage:
        """Campaign-wide usage, across resumes (from the ledger); calls in flight count as made."""
        u = self.ledger.usage
        return Usage(u.fm_calls + in_flight, u.tokens, u.cost_usd, self.prior_wall_s + time.monotonic() - self._t0, u.gpu_s)

    def _refresh(self, proposing: int, evaluating: int) -> None:
        s = self.stats
        s.started = max(s.started, self.ledger.attempts + proposing)
        s.proposing, s.evaluating = proposing, evaluating
        s.counts = {k: v for k, v in self.ledger.counts.items() if v}
        best = self.ledger.best
        if best is not None:
            s.best_score, s.best_node = best.score, best.id
        usage = self._usage()
        s.fm_calls, s.tokens, s.cost_usd, s.elapsed_s = usage.fm_calls, usage.tokens, usage.usd, time.monotonic() - self._t0
        self.on_update(s)

    def _emit(self, event: str) -> None:
        self.stats.last_event = event
        self.on_update(self.stats)

    def _save_wall(self) -> None:
        if self.archive is not None and not self.archive.readonly:
            try:
                self.archive.set_meta("wall_s", repr(self.prior_wall_s + time.monotonic() - self._t0))
            except (OSError, sqlite3.OperationalError) as e:
                if not _disk_full(e):
                    raise  # a full disk loses only this run's wall-clock total


def _disk_full(e: BaseException) -> bool:
    """Whether a write failed because the run directory's file system is full."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(e, sqlite3.OperationalError) and "full" in str(e)


def _private_draws(draws: list[EvaluationResult]) -> dict[str, list[float]]:
    """Each private metric every draw reported, per draw in order (when there were several draws):
    the held-out spread between evaluation seeds that a report sets a gain against."""
    if len(draws) < 2:
        return {}
    keys = set.intersection(*(set(d.private_metrics) for d in draws))
    return {k: [float(d.private_metrics[k]) for d in draws] for k in sorted(keys)}


def _first_failing(draws: list[EvaluationResult]) -> EvaluationResult | None:
    """The first evaluation that did not complete (its verdict is the node's), if any."""
    return next((d for d in draws if not d.complete), None)


def _with_evaluation_fm_usage(node: Node, draws: list[EvaluationResult], timings: dict[str, float]) -> dict[str, Any]:
    """The node's token, cost and model fields once ``draws`` are added: a candidate's own FM calls
    while it is evaluated (the coding agent's) are the node's too. Adds their count to ``timings``."""
    calls = sum(d.fm_usage.get("calls", 0) for d in draws)
    if not calls:
        return {}
    timings["fm_calls"] = timings.get("fm_calls", 1.0 if node.fm_model else 0.0) + calls
    timings["eval_fm_calls"] = timings.get("eval_fm_calls", 0.0) + calls
    return dict(
        prompt_tokens=node.prompt_tokens + sum(d.fm_usage.get("prompt_tokens", 0) for d in draws),
        completion_tokens=node.completion_tokens + sum(d.fm_usage.get("completion_tokens", 0) for d in draws),
        cost_usd=node.cost_usd + sum(d.fm_usage.get("cost_usd", 0.0) for d in draws),
        fm_model=node.fm_model or next(d.fm_usage["model"] for d in draws if d.fm_usage.get("calls")),
    )


def _summed_timings(draws: list[EvaluationResult]) -> dict[str, float]:
    out: dict[str, float] = {}
    for d in draws:
        for k, v in d.timings().items():
            out[k] = out.get(k, 0.0) + v
    return out


def _timed(fn: Callable, *args) -> tuple[Any, float]:
    """Run ``fn`` and also return how long it took (prompt building + FM call + parsing)."""
    t0 = time.perf_counter()
    return fn(*args), time.perf_counter() - t0
