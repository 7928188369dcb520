"""Generated from protos/cohort/api/trainer by `make proto`. Do not edit."""
