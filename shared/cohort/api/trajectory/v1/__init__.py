"""Generated from protos/cohort/api/trajectory/v1 by `make proto`. Do not edit."""
