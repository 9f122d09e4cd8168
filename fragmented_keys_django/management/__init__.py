"""Management commands for operators (fk_*)."""
