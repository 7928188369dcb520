"""The budget service. Token and money accounting with hard limits: estimate, reserve, commit, release."""
