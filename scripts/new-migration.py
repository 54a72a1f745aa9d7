"""Autogenerates an Alembic migration from the models against a scratch SQLite database.

    .venv/bin/python scripts/new-migration.py "what changed"

Autogenerate compares the database with `migrations/metadata.py`: import a new table class there
first. The new file is formatted with ruff (as `make lint` checks it); review it under
src/switchboard/server/migrations/versions/ before committing: autogenerate misses renames and
data moves.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine

from switchboard.server.migrations.migrate import alembic_config


def main() -> None:
    message = sys.argv[1] if len(sys.argv) > 1 else "schema change"
    with tempfile.TemporaryDirectory() as scratch:
        engine = create_engine(f"sqlite:///{Path(scratch) / 'scratch.db'}")
        with engine.begin() as connection:
            config = alembic_config(connection)
            command.upgrade(config, "head")
            versions = Path(__file__).parent.parent / "src/switchboard/server/migrations/versions"
            next_id = f"{len(list(versions.glob('[0-9][0-9][0-9][0-9]_*.py'))) + 1:04d}"
            script = command.revision(config, message=message, autogenerate=True, rev_id=next_id)
    for revision in script if isinstance(script, list) else [script]:
        if revision is not None:
            ruff = Path(sys.executable).with_name("ruff")
            subprocess.run([str(ruff), "format", "--quiet", revision.path], check=True)
            print(f"wrote {revision.path}")


if __name__ == "__main__":
    main()
