from evaluators.rl_objective.evaluator import RLObjectiveEvaluator

__all__ = ["RLObjectiveEvaluator"]
