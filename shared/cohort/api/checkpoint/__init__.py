"""Generated from protos/cohort/api/checkpoint by `make proto`. Do not edit."""
