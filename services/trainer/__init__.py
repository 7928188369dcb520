"""The trainer service.

Decision-head policies: creating them, serving decisions to agents (`Decide`), GRPO updates.
"""
