"""The hash-chained audit log finds any edited, removed or swapped line, and names it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from syft_policies.audit import AuditLog


@pytest.fixture()
def log(tmp_path):
    audit = AuditLog(tmp_path / "audit.jsonl")
    audit.append("submitted", request="r1", function="train", researcher="ada@x.example", code_sha256="ab" * 32)
    audit.append("reviewed", request="r1", risk="low", report_sha256="cd" * 32)
    audit.append("approved", request="r1", by="officer@x.example", irb="IRB-2026-17")
    audit.append("executed", request="r1", epsilon=0.84, output_sha256="ef" * 32)
    audit.append("denied", request="r2", by="officer@x.example", reason="returns rows")
    assert audit.verify().ok
    return audit


def _rewrite(audit, lines):
    audit.path.write_text("".join(line + "\n" for line in lines))


def test_untouched_log_verifies(log):
    result = log.verify()
    assert result.ok and result.entries == 5 and "intact" in str(result)


@pytest.mark.parametrize("line", [1, 3, 5])
def test_an_edited_line_is_found(log, line):
    lines = log.path.read_text().splitlines()
    record = json.loads(lines[line - 1])
    record["by" if "by" in record else "request"] = "someone-else"
    lines[line - 1] = json.dumps(record, sort_keys=True)
    _rewrite(log, lines)
    result = log.verify()
    assert not result.ok and result.line == line and "edited" in result.problem


@pytest.mark.parametrize("line", [1, 3, 5])
def test_a_removed_line_is_found(log, line):
    lines = log.path.read_text().splitlines()
    del lines[line - 1]
    _rewrite(log, lines)
    result = log.verify()
    assert not result.ok and result.line == line


def test_swapped_lines_are_found(log):
    lines = log.path.read_text().splitlines()
    lines[1], lines[2] = lines[2], lines[1]
    _rewrite(log, lines)
    result = log.verify()
    assert not result.ok and result.line == 2


def test_cli_verify_names_the_line(log, tmp_path):
    site_dir = tmp_path / "home" / "lyon-chu"
    site_dir.mkdir(parents=True)
    for name in ("audit.jsonl", "audit.head"):
        os.replace(log.path.parent / name, site_dir / name)
    env = {**os.environ, "MEDSYFT_HOME": str(tmp_path / "home")}
    cli = [sys.executable, "-m", "federation.cli", "audit"]
    ok = subprocess.run([*cli, "verify", "--site", "lyon-chu"], env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "intact: 5 entries" in ok.stdout
    shown = subprocess.run([*cli, "show", "--site", "lyon-chu"], env=env, capture_output=True, text=True, timeout=120)
    assert "approved" in shown.stdout and "IRB-2026-17" in shown.stdout
    lines = (site_dir / "audit.jsonl").read_text().splitlines()
    lines[3] = lines[3].replace("0.84", "0.01")
    (site_dir / "audit.jsonl").write_text("\n".join(lines) + "\n")
    bad = subprocess.run([*cli, "verify", "--site", "lyon-chu"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "line 4" in bad.stdout + bad.stderr
