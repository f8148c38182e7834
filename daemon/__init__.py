"""pg-backup-guardian: watches PostgreSQL backups against recovery objectives."""

__version__ = "0.1.0"
