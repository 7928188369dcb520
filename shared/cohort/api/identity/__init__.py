"""Generated from protos/cohort/api/identity by `make proto`. Do not edit."""
