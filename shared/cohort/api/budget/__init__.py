"""Generated from protos/cohort/api/budget by `make proto`. Do not edit."""
