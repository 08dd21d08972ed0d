from evaluators.optimizer.evaluator import OptimizerEvaluator

__all__ = ["OptimizerEvaluator"]
