"""Generated from protos/cohort/api/jobs/v1 by `make proto`. Do not edit."""
