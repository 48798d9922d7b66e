#!/usr/bin/env python3
"""The pipeline's verdict on Trivy JSON reports (image, repository): fails on a fixable
vulnerability at or above the threshold, on any secret, and on a failed misconfiguration check at
or above it, unless .trivyignore accepts the finding, with a reason and an expiry date.

    scripts/ci/scan-gate.py [--ignorefile .trivyignore] [--metrics FILE] REPORT.json...

.trivyignore is Trivy's own format (Trivy applies it too); this gate adds the rules that keep it
honest: each entry is "ID exp:YYYY-MM-DD" under a "# why: ..." comment, at most
SCAN_IGNORE_MAX_DAYS [180] ahead; an expired entry no longer hides anything.
Settings: SCAN_FAIL_ON [HIGH,CRITICAL] (severities that fail), SCAN_IGNORE_MAX_DAYS [180].
Exit status: 0 pass, 1 blocking findings or a bad ignore file, 2 unreadable input."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
from pathlib import Path

SEVERITIES = ("UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL")
ENTRY = re.compile(r"^(?P<id>\S+)(?:\s+exp:(?P<exp>\S+))?\s*$")


def parse_ignorefile(path: Path, today: dt.date, max_days: int) -> tuple[dict[str, dt.date], list[str], list[str]]:
    """(active IDs -> expiry, problems that fail the gate, expired entries)."""
    active: dict[str, dt.date] = {}
    problems: list[str] = []
    expired: list[str] = []
    reason = ""
    if not path.exists():
        return active, problems, expired
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line:
            reason = ""
            continue
        if line.startswith("#"):
            match = re.match(r"#\s*why:\s*(\S.*)", line)
            reason = match.group(1) if match else reason
            continue
        where = f"{path.name}:{number}"
        match = ENTRY.match(line)
        if not match:
            problems.append(f"{where}: not 'ID exp:YYYY-MM-DD': {line}")
            continue
        finding, expiry = match["id"], match["exp"]
        if not reason:
            problems.append(f"{where}: {finding} has no '# why: ...' line above it")
        if not expiry:
            problems.append(f"{where}: {finding} has no expiry: add exp:YYYY-MM-DD (at most {max_days} days ahead)")
            continue
        try:
            until = dt.date.fromisoformat(expiry)
        except ValueError:
            problems.append(f"{where}: {finding} has an invalid expiry {expiry} (YYYY-MM-DD)")
            continue
        if until < today:
            expired.append(f"{where}: {finding} expired on {until}: it no longer hides the finding")
        elif until > today + dt.timedelta(days=max_days):
            problems.append(f"{where}: {finding} expires {until}, more than {max_days} days ahead")
        else:
            active[finding] = until
        reason = ""
    return active, problems, expired


def findings(report: dict) -> list[dict]:
    """Every vulnerability, secret and failed misconfiguration of a report, flattened."""
    found = []
    for result in report.get("Results") or []:
        target = result.get("Target", "")
        for v in result.get("Vulnerabilities") or []:
            found.append(dict(kind="vulnerability", id=v["VulnerabilityID"], severity=v.get("Severity", "UNKNOWN"),
                              fixable=bool(v.get("FixedVersion")), target=target,
                              what=f'{v.get("PkgName")} {v.get("InstalledVersion")}'
                                   + (f' (fixed in {v["FixedVersion"]})' if v.get("FixedVersion") else " (no fix yet)")))
        for s in result.get("Secrets") or []:
            found.append(dict(kind="secret", id=s["RuleID"], severity=s.get("Severity", "UNKNOWN"), fixable=True,
                              target=target, what=f'{s.get("Title")} at line {s.get("StartLine")}'))
        for m in result.get("Misconfigurations") or []:
            if m.get("Status") == "FAIL":
                found.append(dict(kind="misconfiguration", id=m.get("ID") or m.get("AVDID"), aliases=[m.get("AVDID")],
                                  severity=m.get("Severity", "UNKNOWN"), fixable=True, target=target, what=m.get("Title", "")))
    return found


def blocking(finding: dict, fail_on: set[str]) -> bool:
    if finding["kind"] == "secret":
        return True  # a secret in an image or a repository is never acceptable
    return finding["severity"] in fail_on and finding["fixable"]


def metrics(found: list[dict], blocked: list[dict], ignored: list[dict], expired: list[str]) -> str:
    lines = []
    counts: dict[tuple[str, str, str], int] = {}
    for f in found:
        key = (f["kind"], f["severity"], "true" if f["fixable"] else "false")
        counts[key] = counts.get(key, 0) + 1
    for (kind, severity, fixable), count in sorted(counts.items()):
        lines.append(f'scan_findings{{kind="{kind}",severity="{severity}",fixable="{fixable}"}} {count}')
    lines += [f"scan_blocking_findings {len(blocked)}", f"scan_ignored_findings {len(ignored)}",
              f"scan_ignore_entries_expired {len(expired)}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--ignorefile", type=Path, default=Path(".trivyignore"))
    parser.add_argument("--metrics", type=Path, help="write the counts here (Prometheus text format)")
    parser.add_argument("--today", type=dt.date.fromisoformat, default=dt.date.today(), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    fail_on = {s.strip().upper() for s in os.environ.get("SCAN_FAIL_ON", "HIGH,CRITICAL").split(",") if s.strip()}
    unknown = fail_on - set(SEVERITIES)
    if unknown:
        print(f"scan-gate: error: SCAN_FAIL_ON has {sorted(unknown)}: use {', '.join(SEVERITIES)}", file=sys.stderr)
        return 2
    active, problems, expired = parse_ignorefile(args.ignorefile, args.today, int(os.environ.get("SCAN_IGNORE_MAX_DAYS", "180")))
    found: list[dict] = []
    for path in args.reports:
        try:
            found += findings(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as error:
            print(f"scan-gate: error: {path} is not a Trivy JSON report ({error})", file=sys.stderr)
            return 2
    ignored = [f for f in found if f["id"] in active or any(a in active for a in f.get("aliases", []) if a)]
    blocked = [f for f in found if f not in ignored and blocking(f, fail_on)]
    for f in blocked:
        print(f'BLOCK {f["severity"]:<8} {f["kind"]:<16} {f["id"]:<20} {f["target"]}: {f["what"]}')
    for f in ignored:
        print(f'IGNORED {f["severity"]:<8} {f["kind"]:<16} {f["id"]:<20} until {active.get(f["id"]) or "-"}')
    for line in expired:
        print(f"scan-gate: warning: {line}", file=sys.stderr)
    for line in problems:
        print(f"scan-gate: error: {line}", file=sys.stderr)
    if args.metrics:
        args.metrics.parent.mkdir(parents=True, exist_ok=True)
        args.metrics.write_text(metrics(found, blocked, ignored, expired))
    print(f"scan-gate: {len(found)} findings, {len(blocked)} blocking (fixable {'/'.join(sorted(fail_on))}, or a secret), "
          f"{len(ignored)} ignored", file=sys.stderr)
    return 1 if blocked or problems else 0


if __name__ == "__main__":
    sys.exit(main())
