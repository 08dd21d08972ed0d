"""The coding suite: a coding agent solves HumanEval problems, graded by hidden tests (see evaluator.py)."""

from evaluators.coding.evaluator import CodingEvaluator

__all__ = ["CodingEvaluator"]
