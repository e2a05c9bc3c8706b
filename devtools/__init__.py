"""Tooling beside the product: merge and scoring benchmarks, and tiny OLMo-3 test models."""
