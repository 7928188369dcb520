"""Generated from protos/cohort/api by `make proto`. Do not edit."""
