from evaluators.continual.evaluator import ContinualEvaluator
from evaluators.continual.metrics import ContinualMetrics, continual_metrics

__all__ = ["ContinualEvaluator", "ContinualMetrics", "continual_metrics"]
