from evaluators.fewshot.evaluator import FewShotEvaluator, score_from

__all__ = ["FewShotEvaluator", "score_from"]
