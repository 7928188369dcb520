"""Generated from protos/cohort/api/collector by `make proto`. Do not edit."""
