"""The DAG's planning: a validated run config turned into the jobs the rule files map to rules."""
