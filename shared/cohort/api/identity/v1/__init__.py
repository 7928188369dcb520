"""Generated from protos/cohort/api/identity/v1 by `make proto`. Do not edit."""
