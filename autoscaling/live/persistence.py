"""Where the live controller keeps what must outlive it: the policy state and latest decision
per partition (so a restarted controller resumes), and the log of scaling actions (for the
admin API). The platform database (SQLite or PostgreSQL), under its own Alembic history."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from serving.tenancy.database import make_engine

VERSION_TABLE = "autoscaler_alembic_version"
MIGRATIONS = Path(__file__).with_name("migrations")
ACTIONS_KEPT = 1000  # per partition; older actions are pruned as new ones come

metadata = sa.MetaData()
snapshots = sa.Table(
    "autoscaler_snapshots", metadata,
    sa.Column("partition", sa.String(63), primary_key=True),
    sa.Column("decided_at", sa.Float, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("decisions", sa.Text, nullable=False),
    sa.Column("controller_started_at", sa.Float, nullable=False),
    sa.Column("resumed", sa.Boolean, nullable=False),
)
actions = sa.Table(
    "autoscaler_actions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("partition", sa.String(63), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("endpoint", sa.String(63), nullable=False),
    sa.Column("previous", sa.Integer, nullable=False),
    sa.Column("target", sa.Integer, nullable=False),
    sa.Column("current", sa.Integer),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("explanation", sa.Text, nullable=False),
)


def upgrade(database_url: str) -> None:
    """Create or bring the autoscaler's tables up to date; a no-op when they are."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = database_url
    command.upgrade(config, "head")


@dataclass(frozen=True)
class Snapshot:
    partition: str
    decided_at: float
    state: dict[str, Any]  # PolicyState.to_dict()
    decisions: list[dict[str, Any]]  # EndpointDecision.to_dict() each, plus extras
    controller_started_at: float  # when the controller that decided started
    resumed: bool  # whether that controller started from a saved state


class SnapshotStore:
    def __init__(self, database_url: str) -> None:
        self._engine = make_engine(database_url)

    def close(self) -> None:
        self._engine.dispose()

    def save(self, snapshot: Snapshot, new_actions: list[dict[str, Any]]) -> None:
        """Replace the partition's snapshot and append its new actions, in one transaction."""
        row = {"partition": snapshot.partition, "decided_at": snapshot.decided_at,
               "state": json.dumps(snapshot.state), "decisions": json.dumps(snapshot.decisions),
               "controller_started_at": snapshot.controller_started_at,
               "resumed": snapshot.resumed}
        with self._engine.begin() as conn:
            updated = conn.execute(
                snapshots.update().where(snapshots.c.partition == snapshot.partition)
                .values(**row)).rowcount
            if not updated:
                conn.execute(snapshots.insert().values(**row))
            if new_actions:
                conn.execute(actions.insert(), [
                    {"partition": snapshot.partition, **action} for action in new_actions])
                oldest_kept = (sa.select(actions.c.id)
                               .where(actions.c.partition == snapshot.partition)
                               .order_by(actions.c.id.desc())
                               .offset(ACTIONS_KEPT).limit(1).scalar_subquery())
                conn.execute(actions.delete().where(actions.c.partition == snapshot.partition,
                                                    actions.c.id <= oldest_kept))

    def load(self, partition: str) -> Snapshot | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(snapshots)
                               .where(snapshots.c.partition == partition)).first()
        if row is None:
            return None
        return Snapshot(row.partition, row.decided_at, json.loads(row.state),
                        json.loads(row.decisions), row.controller_started_at, bool(row.resumed))

    def recent_actions(self, partition: str, limit: int = 100) -> list[dict[str, Any]]:
        """The latest `limit` scaling actions, newest first."""
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(actions).where(actions.c.partition == partition)
                                .order_by(actions.c.id.desc()).limit(limit)).mappings().all()
        return [{k: v for k, v in row.items() if k not in ("id", "partition")} for row in rows]
