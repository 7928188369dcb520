"""Generated from protos/cohort/api/reward/v1 by `make proto`. Do not edit."""
