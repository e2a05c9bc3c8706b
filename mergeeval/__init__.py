"""The small core shared by `merges` and `evals`: input errors, guarded atomic outputs, the CLI wrapper."""
