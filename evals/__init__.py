"""Generation with vLLM and scoring with the field's own scorers (EvalPlus, lm-eval IFEval, math-verify)."""

__version__ = "0.1.0"
