"""Generated from protos/cohort/api/collector/v1 by `make proto`. Do not edit."""
