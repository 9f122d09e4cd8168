"""fk_* management commands."""
