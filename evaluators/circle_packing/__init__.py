from evaluators.circle_packing.evaluator import CirclePackingEvaluator, check_packing

__all__ = ["CirclePackingEvaluator", "check_packing"]
