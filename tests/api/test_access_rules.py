"""Who may call each RPC, as the gateway's AccessPolicy decides it from the contract, against the
table recorded in tests/api/data/access_rules.json.

The table was written from the code as it stood before the contract gained service-level default
access rules (`default_access`): moving the rules around in the protos must leave every RPC's
access exactly as it was. A deliberate change of an access rule updates the table:
`.venv/bin/python -m tests.api.test_access_rules` rewrites it (review the diff).
"""

from __future__ import annotations

import json
from pathlib import Path

from switchboard.server.app.server import SERVICES
from switchboard.server.core.auth import Principal, Role
from switchboard.server.core.errors import PermissionDenied
from switchboard.server.core.rpc import AccessPolicy

TABLE = Path(__file__).parent / "data" / "access_rules.json"


def _admits(policy: AccessPolicy, path: str, roles: frozenset[Role]) -> bool:
    try:
        policy.authorize(path, Principal("subject", "org", roles, None))
    except PermissionDenied:
        return False
    return True


def effective_rules() -> dict[str, dict[str, object]]:
    """Method path → `public` (no token needed) and `roles` (the token must hold one of them;
    empty: any token, even one without roles), observed through the policy's own checks."""
    policy = AccessPolicy(SERVICES)
    rules: dict[str, dict[str, object]] = {}
    for service in SERVICES:
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            roles = []
            if not _admits(policy, path, frozenset()):
                roles = sorted(r.value for r in Role if _admits(policy, path, frozenset({r})))
            rules[path] = {"public": policy.is_public(path), "roles": roles}
    return rules


def test_every_rpc_keeps_its_recorded_access_rule() -> None:
    assert effective_rules() == json.loads(TABLE.read_text(encoding="utf-8"))


if __name__ == "__main__":
    TABLE.parent.mkdir(exist_ok=True)
    TABLE.write_text(json.dumps(effective_rules(), indent=1) + "\n", encoding="utf-8")
