"""Generated from protos/cohort/api/agentruntime/v1 by `make proto`. Do not edit."""
