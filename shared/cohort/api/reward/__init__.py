"""Generated from protos/cohort/api/reward by `make proto`. Do not edit."""
