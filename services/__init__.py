"""Cohort services."""
