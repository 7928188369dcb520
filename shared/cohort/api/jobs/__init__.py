"""Generated from protos/cohort/api/jobs by `make proto`. Do not edit."""
