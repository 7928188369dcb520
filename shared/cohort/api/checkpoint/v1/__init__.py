"""Generated from protos/cohort/api/checkpoint/v1 by `make proto`. Do not edit."""
