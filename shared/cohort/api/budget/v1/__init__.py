"""Generated from protos/cohort/api/budget/v1 by `make proto`. Do not edit."""
