"""References: which holder uses which target, so what is in use cannot be deleted.

The stored deployments get their references here (the models, versions and aliases each
one serves, challenges with or falls back to), in the format the registry reads at this
revision: ``model:NAME`` plus ``alias:NAME@ALIAS``, ``version:NAME/N`` or
``latest:NAME``, held by ``deployment:NAME``. It is a frozen copy on purpose: a migration
imports no capability and must keep doing what it did when it shipped.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _targets(ref: str) -> set[str]:
    if "@" in ref:
        name, _, alias = ref.partition("@")
        named = f"latest:{name}" if alias == "latest" else f"alias:{name}@{alias}"
    elif "/" in ref:
        name, _, version = ref.partition("/")
        named = f"latest:{name}" if version == "latest" else f"version:{name}/{int(version)}"
    else:
        name, named = ref, f"latest:{ref}"
    return {f"model:{name}", named}


def _deployment_references(spec: str) -> set[str]:
    data = json.loads(spec)
    refs = [data["model"], (data.get("traffic") or {}).get("challenger")]
    refs.append((data.get("fallback") or {}).get("model"))
    return set().union(*(_targets(r) for r in refs if r))


def upgrade() -> None:
    table = op.create_table(
        "kiln_references",
        sa.Column("holder", sa.String(length=256), nullable=False),
        sa.Column("target", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("holder", "target", name="pk_kiln_references"),
    )
    op.create_index("ix_kiln_references_target", "kiln_references", ["target"], unique=False)
    rows = op.get_bind().execute(sa.text("SELECT name, spec FROM kiln_deployments")).all()
    backfill = [
        {"holder": f"deployment:{name}", "target": target}
        for name, spec in rows
        for target in sorted(_deployment_references(spec))
    ]
    if backfill:
        op.bulk_insert(table, backfill)


def downgrade() -> None:
    op.drop_index("ix_kiln_references_target", table_name="kiln_references")
    op.drop_table("kiln_references")
