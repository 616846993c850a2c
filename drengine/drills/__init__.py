"""Restore drills: restore into a sandbox, verify, measure RTO and RPO."""
