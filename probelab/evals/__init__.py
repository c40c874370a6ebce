"""Evaluations for continual learning: the new skill (exact-answer accuracy) and retention
(Wikipedia perplexity, MMLU log-likelihood multiple choice). All are batched and padding-safe:
a batch gives the same numbers as one example at a time.

>>> import probelab
>>> from probelab.evals import perplexity
>>> model, tok = probelab.load_model("tiny-llama")
>>> perplexity(model, tok, ["hello world"]).value > 1
True
"""
from .accuracy import AccuracyResult, extract_answer, task_accuracy
from .multiple_choice import MC_CHANCE, MCResult, mc_accuracy
from .perplexity import PerplexityResult, perplexity

__all__ = ["AccuracyResult", "extract_answer", "task_accuracy", "MC_CHANCE", "MCResult", "mc_accuracy",
           "PerplexityResult", "perplexity"]
