"""The collector service.

Runs agents in parallel groups (`CollectGroup`) and owns the trajectory store (ingest, get, search,
export).
"""
