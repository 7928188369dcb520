"""Generated from protos/cohort/api/agentruntime by `make proto`. Do not edit."""
