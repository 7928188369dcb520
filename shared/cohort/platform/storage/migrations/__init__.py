"""Alembic migrations for Cohort's database (a package so that installs ship them)."""
