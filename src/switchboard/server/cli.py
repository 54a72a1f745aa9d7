"""The `switchboard` command: serve, run, db upgrade, token create."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from datetime import timedelta
from pathlib import Path

from switchboard.server.app.config import Settings
from switchboard.server.core.auth import Role, TokenService
from switchboard.server.core.clock import clock_with_offset
from switchboard.server.core.db import Database, create_engine, normalize_url
from switchboard.server.core.errors import DomainError
from switchboard.server.core.logging import configure_logging
from switchboard.server.migrations.migrate import upgrade
from switchboard.server.orgs.repository import OrgRepository

_TTL = re.compile(r"^(\d+)([smhd])$")


def parse_ttl(text: str) -> timedelta:
    match = _TTL.match(text)
    if not match:
        raise argparse.ArgumentTypeError("use a number and a unit: 30m, 12h, 7d")
    amount, unit = int(match[1]), match[2]
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    return timedelta(**{units[unit]: amount})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="serve gRPC (configured by SWITCHBOARD_* variables)")
    commands.add_parser("run", help="start server + Envoy on embedded defaults, print examples")
    db = commands.add_parser("db", help="database maintenance")
    db.add_subparsers(dest="db_command", required=True).add_parser(
        "upgrade", help="apply migrations"
    )
    token = commands.add_parser("token", help="bearer tokens")
    create = token.add_subparsers(dest="token_command", required=True).add_parser(
        "create", help="issue a token (registers the org and application if new)"
    )
    create.add_argument("--org", required=True, help="org id, e.g. demo")
    create.add_argument("--roles", default="Client", help="comma list of Client, Partner, Admin")
    create.add_argument("--subject", default=None, help="application id (default: <org>-app)")
    create.add_argument("--client-id", default=None, help="audience claim (stored as clientId)")
    create.add_argument("--ttl", type=parse_ttl, default=timedelta(hours=24), help="e.g. 12h, 7d")
    return parser


async def _db_upgrade(settings: Settings) -> None:
    engine = create_engine(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


class CommandRefused(Exception):
    """The command cannot do what was asked; its message says why and what to do instead."""


def _token_secret(settings: Settings) -> str:
    """The secret the running server verifies tokens with. Never a new one: a token signed with
    a secret the server does not know is rejected by it, which is worse than no token at all."""
    secret = settings.existing_jwt_secret()
    if secret is None:
        raise CommandRefused(
            f"no server secret at {settings.jwt_secret_file().resolve()}: the server generates "
            "its secret when it first starts, in SWITCHBOARD_VAR_DIR (./var of its working "
            "directory by default), and this command never makes a new one. Run this command "
            "from the directory the server runs in, or give it the server's settings: "
            "SWITCHBOARD_VAR_DIR (and SWITCHBOARD_DATABASE_URL, whose default "
            "./var/switchboard.db is also relative), or SWITCHBOARD_JWT_SECRET."
        )
    if settings.jwt_secret is None:
        # The secret comes from a server's var/: the database must be that server's too, not
        # a new SQLite file next to where this command happens to run.
        url = normalize_url(settings.database_url)
        database = url.database
        sqlite_file = url.get_backend_name() == "sqlite" and database not in (None, "", ":memory:")
        if sqlite_file and not Path(str(database)).exists():
            raise CommandRefused(
                f"no database at {Path(str(database)).resolve()} (the server's secret is at "
                f"{settings.jwt_secret_file().resolve()}): set SWITCHBOARD_DATABASE_URL to the "
                "server's database, or run this command from the directory the server runs in."
            )
    return secret


async def _token_create(settings: Settings, args: argparse.Namespace) -> str:
    roles = Role.parse_list(args.roles)
    secret = _token_secret(settings)
    subject = args.subject or f"{args.org}-app"
    clock = clock_with_offset(settings.clock_offset_seconds)
    engine = create_engine(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        await upgrade(engine)
        async with Database(engine).write() as session:
            repo = OrgRepository()
            await repo.ensure_org(session, args.org, clock.now())
            await repo.ensure_application(session, args.org, subject, clock.now())
    finally:
        await engine.dispose()
    tokens = TokenService(secret, clock)
    return tokens.issue(
        org=args.org, roles=roles, subject=subject, ttl=args.ttl, client_id=args.client_id
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    try:
        if args.command == "serve":
            from switchboard.server.app.server import serve

            configure_logging(settings.log_level)
            asyncio.run(serve(settings))
        elif args.command == "run":
            from switchboard.server.app.platform import run_platform

            asyncio.run(run_platform(settings))
        elif args.command == "db":
            configure_logging(settings.log_level)
            asyncio.run(_db_upgrade(settings))
            print("database is up to date")
        elif args.command == "token":
            print(asyncio.run(_token_create(settings, args)))
    except (DomainError, CommandRefused) as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
