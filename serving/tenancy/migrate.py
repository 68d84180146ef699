"""Schema migrations for the tenancy tables, applied from code: no alembic.ini on disk."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
# Its own version table, so other parts of the project may keep Alembic histories of their
# own in the same database.
VERSION_TABLE = "tenancy_alembic_version"


def alembic_config(database_url: str) -> Config:
    """Alembic's config, built in code. The URL travels as an attribute, not a main option,
    because options go through ConfigParser, which would mangle a "%" in a password."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database to `revision` (the latest by default); a no-op when it is there."""
    command.upgrade(alembic_config(database_url), revision)
