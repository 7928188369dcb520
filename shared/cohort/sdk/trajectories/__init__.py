"""Trajectory formats and processing shared by every service.

- `trae`: Trae Agent trajectory JSON, both ways, round-trip exact.
- `cohort_block`: the `"cohort"` key of a file written by Cohort's recorder, both ways.
- `jsonl`: Cohort's own form, one protobuf canonical JSON trajectory per line.
- `openai_chat`: OpenAI chat fine-tuning records (with tools and tool calls).
- `transcript`: OpenAI-style chat transcripts into trajectories, with an inferred outcome.
- `redaction`: secrets (API keys, tokens, passwords in URLs, private keys) replaced by placeholders.
- `usage`: token usage sums and cost from a price table.

Import the submodules directly; this package re-exports nothing so that none of them pulls in the others.
"""

ATTEMPT_LABEL = "job_attempt"
"""The label a job puts on the trajectories it collects: the job attempt that collected them, so the
work of an abandoned attempt can be marked superseded (`SupersedeTrajectories`)."""
