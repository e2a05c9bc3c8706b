"""Streaming merges of fine-tuned LLM checkpoints (task vectors, tensor by tensor)."""

__version__ = "0.1.0"
