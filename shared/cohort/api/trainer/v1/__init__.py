"""Generated from protos/cohort/api/trainer/v1 by `make proto`. Do not edit."""
