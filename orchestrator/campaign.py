"""The campaign loop: select → propose → commit → evaluate → admit, until the iterations or a budget
run out.

Proposals (FM calls) and evaluations (sandboxed runs) overlap in two pools; the main thread alone
writes the archive, so every write is ordered and every attempt is a row and a commit the moment it
exists. A crash loses only what is in flight; ``run`` again re-evaluates nodes left half-done.
"""

from __future__ import annotations

import random
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from archive import Archive, Node, NodeStatus
from evaluators import registry
from evaluators.agent import MANIFEST, AgentManifestError, load_manifest, parse_manifest
from evaluators.pipeline import EvaluationResult
from orchestrator import admission, selection
from orchestrator.budget import Usage, exhausted
from orchestrator.config import CampaignConfig
from orchestrator.executor import EvalJob, Executor, LocalExecutor, SandboxSpec
from orchestrator.mutation import BUILTIN as BUILTIN_OPERATORS
from orchestrator.memory import CampaignMemory
from orchestrator.mutation.operators import Operator, Sampling, summarise
from orchestrator.mutation.prompts import Exemplar, ProposalContext
from orchestrator.plugins import resolve as resolve_plugin

SEED_ID = 0
FAILED_CHILD = (NodeStatus.INVALID, NodeStatus.FAILED)


class CampaignError(RuntimeError):
    """The campaign cannot start or go on (e.g. the seed agent is invalid)."""


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


def _operator(name: str) -> Operator:
    cls = resolve_plugin("mutation operator", name, BUILTIN_OPERATORS)
    return cls()


def _named(field: str, name: str, resolve: Callable[[str], Any]) -> Any:
    """``resolve(name)``, with a bad name reported against its config field."""
    try:
        return resolve(name)
    except ValueError as e:
        raise CampaignError(f"{field} = {name!r}: {e}") from None


class Campaign:
    def __init__(
        self,
        cfg: CampaignConfig,
        run_dir: Path,
        fm: Any,
        *,
        executor: Executor | None = None,
        on_update: Callable[[Stats], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.fm = fm
        self.evaluator = registry.create(cfg.evaluator.name, cfg.evaluator.options)
        self.select_policy = _named("[selection].method", cfg.selection.method, selection.resolve)
        self.select_for = {
            op: _named(f"[selection].per_operator.{op}", m, selection.resolve) for op, m in cfg.selection.per_operator.items()
        }
        self.admit_policy = _named("[admission].policy", cfg.admission.policy, admission.resolve)
        self.admit_rule = admission.AdmissionRule(cfg.admission.leeway, cfg.admission.reference)
        self.operators = {name: _named(f"[mutation].operators.{name}", name, _operator) for name in cfg.mutation.operators}
        if all(op.needs_knobs or cfg.mutation.operators[n] <= 0 for n, op in self.operators.items()):
            raise CampaignError(
                "[mutation].operators: every operator with a weight tunes numbers that FM edits changed "
                f"({', '.join(self.operators)}); add one that writes children itself, e.g. diff"
            )
        self.executor = executor or LocalExecutor(cfg.evaluation.workers)
        self.on_update = on_update or (lambda stats: None)
        self.sandbox = SandboxSpec(cfg.sandbox.backend, cfg.sandbox.trusted, cfg.evaluation.use_gpu, cfg.evaluation.evals_per_gpu)
        self.eval_seed = random.Random(f"eval-{cfg.campaign.random_seed}").randrange(2**31)
        self.stats = Stats()
        self.nodes: dict[int, Node] = {}  # cache of every row; the main thread is the only writer
        self._files: dict[int, dict[str, bytes]] = {}  # a few nodes' whole trees
        self._text_cache: dict[int, dict[str, str]] = {}  # every node's editable files, once read
        self.memory = CampaignMemory(self._texts, self._files_of)  # programs held, knobs learnt
        self.archive: Archive | None = None
        self.prior_wall_s = 0.0  # wall-clock of earlier runs of this campaign (resumes)
        self._t0 = time.monotonic()

    # ---- the loop ---------------------------------------------------------------------

    def run(self, iterations: int | None = None) -> Stats:
        """Run (or resume) until ``iterations`` child attempts exist or a budget runs out."""
        target = self.cfg.campaign.iterations if iterations is None else iterations
        self._t0 = time.monotonic()
        self.archive = self._open_archive()
        interrupted = False
        try:
            self.nodes = {n.id: n for n in self.archive.nodes()}
            self.rng = random.Random(f"{self.cfg.campaign.random_seed}-{len(self.nodes)}")
            self.prior_wall_s = float(self.archive.get_meta("wall_s", "0") or 0)
            self.stats.target = target
            for node in sorted(self.nodes.values(), key=lambda n: n.id):
                self.memory.note_program(node)
                self.memory.learn(node, self.nodes.get(node.parent_id))
            self._ensure_seed()
            self._loop(target)
            self.stats.stop_reason = self.stats.stop_reason or f"reached {target} iterations"
            self._refresh({}, {})
            return self.stats
        except KeyboardInterrupt:
            interrupted = True
            self.stats.stop_reason = "interrupted: nodes in flight are re-evaluated on resume"
            raise
        finally:
            # on Ctrl-C do not wait for in-flight work: a resume re-evaluates it
            self.executor.shutdown(wait=not interrupted)
            self._save_wall()
            self.archive.close()

    def _loop(self, target: int) -> None:
        proposing: dict[Future, tuple[int, str, ProposalContext, float]] = {}
        evaluating: dict[Future, tuple[int, float]] = {}
        fm_pool = ThreadPoolExecutor(self.cfg.fm.concurrency, thread_name_prefix="dgm-fm")
        try:
            for node_id in self._recover():
                self._evaluate(node_id, evaluating)
            while True:
                self._refresh(proposing, evaluating)
                while self._may_propose(proposing, evaluating, target):
                    fut, meta = self._submit_proposal(fm_pool)
                    if fut.done():  # no FM call: record it now, so the next draw knows its program
                        self._evaluate(self._record_proposal(fut, *meta), evaluating)
                    else:
                        proposing[fut] = meta
                if not proposing and not evaluating:
                    return
                done, _ = wait([*proposing, *evaluating], return_when=FIRST_COMPLETED)
                for fut in done:
                    if fut in proposing:
                        self._evaluate(self._record_proposal(fut, *proposing.pop(fut)), evaluating)
                    else:
                        self._record_evaluation(fut, *evaluating.pop(fut))
        finally:
            fm_pool.shutdown(wait=not proposing, cancel_futures=True)

    def _may_propose(self, proposing: dict, evaluating: dict, target: int) -> bool:
        if self.stats.stop_reason:
            return False
        if self.stats.started >= target:
            return False
        # only FM calls wait in `proposing`: operators that call no FM run inline
        reason = exhausted(self._usage(in_flight=len(proposing)), self.cfg.budget)
        if reason:
            self.stats.stop_reason = reason
            return False
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
            return archive
        archive = Archive.create(self.run_dir, self.cfg.campaign.name)
        archive.set_meta("config", self.cfg.model_dump_json(exclude={"base_dir"}))
        return archive

    def _store(self, node: Node) -> Node:
        self.nodes[node.id] = node
        return node

    def _ensure_seed(self) -> None:
        seed = self.nodes.get(SEED_ID)
        if seed is None:
            seed_dir = self.cfg.campaign.seed_agent or self.evaluator.seed_agent()
            load_manifest(seed_dir)  # a broken seed fails here, with the file and field named
            seed = self._store(
                self.archive.add_node(
                    parent_id=None, status=NodeStatus.EVALUATING, operator="seed", src_dir=seed_dir,
                    message=f"seed agent from {seed_dir}",
                )
            )
            self.memory.note_program(seed)
        if not seed.status.finished:
            self._emit(f"evaluating the seed agent (node {SEED_ID})")
            self._record_evaluation(self.executor.submit(self._job(SEED_ID)), SEED_ID, time.monotonic())
            seed = self.nodes[SEED_ID]
        if seed.status != NodeStatus.ADMITTED:
            raise CampaignError(f"the seed agent is {seed.status.value}: {seed.error or seed.feedback}")
        self.stats.seed_score = seed.score

    def _recover(self) -> list[int]:
        report = self.archive.recover()
        pending = [i for i in report.in_flight if i != SEED_ID]
        if pending:
            self._emit(f"resuming: re-evaluating nodes {pending} left in flight")
        return pending

    def _files_of(self, node_id: int) -> dict[str, bytes]:
        if node_id not in self._files:
            self._files[node_id] = self.archive.read_files(node_id)
            if len(self._files) > 64:
                self._files.pop(next(iter(self._files)))
        return self._files[node_id]

    # ---- proposals --------------------------------------------------------------------

    def _submit_proposal(self, pool: ThreadPoolExecutor) -> tuple[Future, tuple]:
        t0 = time.perf_counter()
        weights = self.cfg.mutation.operators
        name = self.rng.choices(list(weights), weights=list(weights.values()))[0]
        parent = self._select_parent(self.operators[name])
        if parent is None:  # nothing this operator can work from yet: one that needs no knobs
            free = {n: w for n, w in weights.items() if not self.operators[n].needs_knobs and w > 0}
            name = self.rng.choices(list(free), weights=list(free.values()))[0]
            parent = self._select_parent(self.operators[name])
        op = self.operators[name]
        ctx = self._context(parent, with_knobs=op.needs_knobs)
        sampling = Sampling(self.cfg.fm.sample_temperature(self.rng), self.rng.randrange(2**31), self.cfg.fm.max_tokens)
        self.stats.started += 1
        if op.calls_fm:
            fut = pool.submit(_timed, op.propose, ctx, self.fm, sampling)
        else:  # instant: run it here rather than race the next draw
            fut = Future()
            try:
                fut.set_result(_timed(op.propose, ctx, self.fm, sampling))
            except Exception as e:  # recorded as a failed attempt, like an FM error
                fut.set_exception(e)
        return fut, (parent.id, name, ctx, time.perf_counter() - t0)

    def _select_parent(self, op: Operator) -> Node | None:
        eligible = [n for n in self.nodes.values() if n.status == NodeStatus.ADMITTED and n.score is not None]
        if op.needs_knobs:
            knobs, known = self.memory.knobs, self.memory.known
            eligible = [n for n in eligible if op.accepts(self._texts(n.id), knobs, known)]
            if not eligible:
                return None
        counts = {}
        for n in self.nodes.values():
            if n.parent_id is not None and n.status == NodeStatus.ADMITTED:
                counts[n.parent_id] = counts.get(n.parent_id, 0) + 1
        policy = self.select_for.get(op.name, self.select_policy)
        probs = policy([n.score for n in eligible], [counts.get(n.id, 0) for n in eligible])
        return eligible[selection.sample(probs, self.rng)[0]]

    def _texts(self, node_id: int) -> dict[str, str]:
        """The node's editable files as text (cached: a node's code never changes)."""
        if node_id not in self._text_cache:
            self._text_cache[node_id] = _editable(self._files_of(node_id), f"node {node_id}")
        return self._text_cache[node_id]

    def _context(self, parent: Node, *, with_knobs: bool = False) -> ProposalContext:
        texts = self._texts(parent.id)
        editable = list(texts)
        others = sorted(
            (n for n in self.nodes.values() if n.status == NodeStatus.ADMITTED and n.id != parent.id and n.score is not None),
            key=lambda n: -n.score,
        )[: self.cfg.mutation.exemplars]
        failures: dict[str, str] = {}  # error → note; the most recent first, each error once
        for n in sorted(self.nodes.values(), key=lambda n: -n.id):
            # answers the model gave (not FM outages, not refine's nudges), so it can avoid them
            if n.parent_id == parent.id and n.status in FAILED_CHILD and n.response and n.error and n.error not in failures:
                failures[n.error] = f"{n.operator} change ({_first_line(n.response)}): {n.error}"
        return ProposalContext(
            task=self.evaluator.task,
            parent_id=parent.id,
            files=texts,
            editable=editable,
            target=self.rng.choice(editable),
            score=parent.score,
            public_metrics=dict(parent.public_metrics),
            feedback=parent.feedback,
            exemplars=[Exemplar(n.id, n.score, dict(n.public_metrics), n.feedback.split("\n")[0]) for n in others],
            failures=list(failures.values())[: self.cfg.mutation.failures_shown],
            idea=self._pick_idea(),
            **({"knobs": self.memory.knobs, "known": self.memory.known} if with_knobs else {}),
        )

    def _pick_idea(self) -> str:
        ideas = [*self.evaluator.ideas, *self.cfg.mutation.ideas]
        if ideas and self.rng.random() < self.cfg.mutation.idea_share:
            return self.rng.choice(ideas)
        return ""

    def _record_proposal(self, fut: Future, parent_id: int, op: str, ctx: ProposalContext, select_s: float) -> int | None:
        """Write the attempt as a node; return its id when it should be evaluated."""
        t0 = time.perf_counter()
        try:
            proposal, propose_s = fut.result()
        except Exception as e:  # FMError, or a bug in an operator: the campaign goes on
            kind = getattr(e, "kind", type(e).__name__)
            detail = str(e) if hasattr(e, "kind") else traceback.format_exc(limit=-3)
            node = self.archive.add_node(
                parent_id=parent_id, status=NodeStatus.FAILED, operator=op,
                message=f"{op} attempt failed: {kind}", error=f"FM call failed ({kind}): {detail}",
                fm_model=self.cfg.fm.model, timings={"select_s": select_s},
            )
            self._store(node)
            self._emit(f"node {node.id}: FM call failed ({kind})")
            return None
        c = proposal.completion
        common = dict(
            operator=op, fm_model=(getattr(c, "model", "") or self.cfg.fm.model) if c is not None else "", prompt=proposal.prompt,
            response=proposal.response, prompt_tokens=getattr(c, "prompt_tokens", 0),
            completion_tokens=getattr(c, "completion_tokens", 0), cost_usd=getattr(c, "cost_usd", 0.0),
        )
        timings = {"select_s": select_s, "propose_s": propose_s, "fm_s": getattr(c, "latency_s", 0.0)}
        files = texts = None
        if proposal.valid:
            files = {**self._files_of(parent_id), **{p: t.encode() for p, t in proposal.files.items()}}
            try:
                texts = _editable(files, f"node {parent_id}'s child")
                twin = self.memory.duplicate_of(texts, files.get(MANIFEST))
            except AgentManifestError:  # a broken agent.toml: the evaluation will say so
                twin = None
            if twin is not None:  # the same program was evaluated (or is in flight): spend nothing on it
                proposal.files, proposal.error = None, f"the proposal is the same program as node {twin}, already evaluated"
        if not proposal.valid:
            node = self.archive.add_node(
                parent_id=parent_id, status=NodeStatus.INVALID, message=f"invalid {op} proposal: {proposal.error}",
                error=proposal.error, feedback=proposal.error, timings=timings, **common,
            )
            self._store(node)
            self._emit(f"node {node.id}: invalid proposal ({proposal.error[:60]})")
            return None
        timings["archive_s"] = time.perf_counter() - t0
        node = self.archive.add_node(
            parent_id=parent_id, status=NodeStatus.EVALUATING, files=files, message=proposal.summary,
            timings=timings, **common,
        )
        self._files[node.id] = files
        if texts is not None:
            self._text_cache[node.id] = texts
        self.memory.note_program(node)  # it counts from now, before its score is in
        node = self.archive.update_node(node.id, timings={**timings, "archive_s": time.perf_counter() - t0})
        self._store(node)
        return node.id

    # ---- evaluations ------------------------------------------------------------------

    def _job(self, node_id: int) -> EvalJob:
        return EvalJob(
            node_id=node_id, files=self._files_of(node_id), evaluator=self.cfg.evaluator.name,
            evaluator_options=self.cfg.evaluator.options, stages=self.cfg.evaluator.stages,
            sandbox=self.sandbox, seed=self.eval_seed,
        )

    def _evaluate(self, node_id: int | None, evaluating: dict[Future, tuple[int, float]]) -> None:
        """Send a recorded node to the executor (None: nothing to evaluate)."""
        if node_id is not None:
            evaluating[self.executor.submit(self._job(node_id))] = (node_id, time.monotonic())

    def _record_evaluation(self, fut: Future, node_id: int, submitted: float) -> None:
        t0 = time.perf_counter()
        node = self.nodes[node_id]
        try:
            result: EvaluationResult = fut.result()
        except Exception:
            self._store(self.archive.update_node(
                node_id, status=NodeStatus.FAILED, error=f"evaluation crashed:\n{traceback.format_exc(limit=-4)}"
            ))
            self._emit(f"node {node_id}: evaluation crashed")
            return
        status, error = self._verdict(node, result)
        timings = {**node.timings, **result.timings(), "eval_wall_s": time.monotonic() - submitted}
        fields = dict(
            status=status, error=error, stages=[s.to_record() for s in result.stages],
            public_metrics=result.public_metrics, private_metrics=result.private_metrics,
            score=result.score, feedback=result.feedback,
        )
        timings["archive_s"] = timings.get("archive_s", 0.0) + (time.perf_counter() - t0)
        node = self._store(self.archive.update_node(node_id, timings=timings, **fields))
        self.memory.learn(node, self.nodes.get(node.parent_id))
        score = "" if result.score is None else f" score {result.score:.4f}"
        self._emit(f"node {node_id}: {status.value}{score}")

    def _verdict(self, node: Node, result: EvaluationResult) -> tuple[NodeStatus, str]:
        if result.evaluator_error:
            return NodeStatus.FAILED, result.evaluator_error
        if node.parent_id is None:  # the seed: admitted when it completes its first stage
            return (NodeStatus.ADMITTED, "") if result.first_stage_complete else (NodeStatus.INVALID, result.error)
        if not result.first_stage_complete:
            return NodeStatus.INVALID, result.error
        parent = self.nodes[node.parent_id]
        changed = self._files_of(node.id) != self._files_of(parent.id)
        seed = self.nodes.get(SEED_ID)
        decision = self.admit_policy(
            admission.Candidate(True, changed, result.score, parent.score, seed.score if seed else None), self.admit_rule
        )
        if decision.admit:
            return NodeStatus.ADMITTED, ""
        return NodeStatus.REJECTED, decision.reason

    # ---- bookkeeping ------------------------------------------------------------------

    def _usage(self, in_flight: int = 0) -> Usage:
        """Campaign-wide usage, across resumes (from the archive); calls in flight count as made."""
        calls = in_flight + sum(1 for n in self.nodes.values() if n.parent_id is not None and n.fm_model)
        tokens = sum(n.prompt_tokens + n.completion_tokens for n in self.nodes.values())
        cost = sum(n.cost_usd for n in self.nodes.values())
        return Usage(calls, tokens, cost, self.prior_wall_s + time.monotonic() - self._t0)

    def _refresh(self, proposing: dict, evaluating: dict) -> None:
        s = self.stats
        s.started = max(s.started, sum(1 for n in self.nodes.values() if n.id != SEED_ID) + len(proposing))
        s.proposing, s.evaluating = len(proposing), len(evaluating)
        s.counts = {}
        for n in self.nodes.values():
            s.counts[n.status.value] = s.counts.get(n.status.value, 0) + 1
        scored = [n for n in self.nodes.values() if n.status == NodeStatus.ADMITTED and n.score is not None]
        if scored:
            top = max(scored, key=lambda n: (n.score, -n.id))
            s.best_score, s.best_node = top.score, top.id
        usage = self._usage()
        s.fm_calls, s.tokens, s.cost_usd, s.elapsed_s = usage.fm_calls, usage.tokens, usage.usd, time.monotonic() - self._t0
        self.on_update(s)

    def _emit(self, event: str) -> None:
        self.stats.last_event = event
        self.on_update(self.stats)

    def _save_wall(self) -> None:
        if self.archive is not None and not self.archive.readonly:
            self.archive.set_meta("wall_s", repr(self.prior_wall_s + time.monotonic() - self._t0))


def _editable(files: dict[str, bytes], source: str) -> dict[str, str]:
    """An agent's editable files as text, as its manifest names them."""
    if MANIFEST not in files:
        raise AgentManifestError(f"{source} has no {MANIFEST}")
    manifest = parse_manifest(files[MANIFEST].decode(), files, source=f"{source}: {MANIFEST}")
    return {p: files[p].decode("utf-8", "replace") for p in manifest.editable}


def _timed(fn: Callable, *args) -> tuple[Any, float]:
    """Run ``fn`` and also return how long it took (prompt building + FM call + parsing)."""
    t0 = time.perf_counter()
    return fn(*args), time.perf_counter() - t0


def _first_line(text: str) -> str:
    return summarise(text or "", 80)
