"""Known-vulnerability scan of uv.lock (`make audit`, run by .ci/run).

Exports the lock (runtime and dev, with hashes), audits it with pip-audit against PyPI's
advisory data, and fails on any finding not allowlisted in security/audit-allowlist.txt (each
entry with a reason). A package the advisory service could not be asked about is listed as
unaudited: that is a gap in the scan, reported loudly, not a pass.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWLIST = ROOT / "security" / "audit-allowlist.txt"
UV = ROOT / "tools" / ".uv" / "bin" / "uv"
PIP_AUDIT = ROOT / ".venv" / "bin" / "pip-audit"


def allowlisted() -> dict[str, str]:
    """Advisory id → reason; a line without a reason is an error."""
    allowed: dict[str, str] = {}
    for number, line in enumerate(ALLOWLIST.read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split(None, 2)
        if len(parts) < 3:
            sys.exit(f"{ALLOWLIST.name}:{number}: want '<id> <package> <reason>', got {text!r}")
        allowed[parts[0]] = f"{parts[1]}: {parts[2]}"
    return allowed


def main() -> int:
    allowed = allowlisted()
    with tempfile.TemporaryDirectory() as tmp:
        requirements, report = Path(tmp) / "requirements.txt", Path(tmp) / "audit.json"
        export = [UV, "export", "--quiet", "--locked", "--extra", "dev", "--no-emit-project"]
        export += ["--format", "requirements-txt", "-o", requirements]
        subprocess.run(export, check=True, cwd=ROOT)
        command = [PIP_AUDIT, "--disable-pip", "--require-hashes", "-r", requirements]
        command += ["--format", "json", "-o", report, "--progress-spinner", "off"]
        for advisory in allowed:
            command += ["--ignore-vuln", advisory]
        finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if not report.exists():
            print(finished.stdout, finished.stderr, sep="\n", file=sys.stderr)
            return finished.returncode or 1
        dependencies = json.loads(report.read_text())["dependencies"]
    findings = [
        (dep["name"], dep["version"], vuln)
        for dep in dependencies
        for vuln in dep.get("vulns", [])
        if vuln["id"] not in allowed
    ]
    unaudited = [dep["name"] for dep in dependencies if "skip_reason" in dep]
    for name, version, vuln in findings:
        fixed = ", ".join(vuln.get("fix_versions", [])) or "no fixed release"
        print(f"VULNERABLE {name} {version}: {vuln['id']} (fixed in: {fixed})")
    audited = len(dependencies) - len(unaudited)
    print(
        f"audit: {audited} of {len(dependencies)} locked packages audited, "
        f"{len(findings)} finding(s), {len(allowed)} allowlisted advisory id(s)"
    )
    if unaudited:
        print(
            f"audit: WARNING: {len(unaudited)} package(s) NOT audited, the advisory service did "
            f"not answer for them (no network to it?): {', '.join(sorted(unaudited)[:8])}"
            + (" …" if len(unaudited) > 8 else "")
        )
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
