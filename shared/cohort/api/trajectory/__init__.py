"""Generated from protos/cohort/api/trajectory by `make proto`. Do not edit."""
