"""Governance metadata of approvals at one hospital: IRB / data-use agreement, purpose,
expiry, who approved, and the optional two-person rule.

Kept in the site's directory (JSON, replaced atomically). The datasite checks it before
any approved code runs (``datasites.syft_patches``), and the vetted jobs check it again,
so an expired approval stops working even though Syft still lists the request as approved.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .refusals import Refused

__all__ = ["Approval", "GovernanceStore", "ApprovalExpired", "GOVERNANCE_FILE"]

GOVERNANCE_FILE = "approvals.json"


class ApprovalExpired(Refused):
    """The approval behind this execution has expired or is not complete."""


@dataclass
class Approval:
    request: str
    function: str
    purpose: str
    irb: str = ""
    dua: str = ""
    expires: str = ""  # ISO date; the approval is valid up to and including that day (UTC)
    study: str = ""
    approvers: list[str] = field(default_factory=list)
    required: int = 1
    code: str = ""  # the Syft user-code id the approval lets run

    def __post_init__(self):
        problems = []
        if not (self.irb or self.dua):
            problems.append("an IRB approval or data-use agreement reference (irb=... or dua=...)")
        if not self.purpose.strip():
            problems.append("the purpose of the use")
        if self.expires:
            try:
                dt.date.fromisoformat(self.expires)
            except ValueError:
                problems.append(f"an expiry date as YYYY-MM-DD (got {self.expires!r})")
        if problems:
            raise ValueError("an approval needs " + "; ".join(problems))

    @property
    def complete(self) -> bool:
        return len(set(self.approvers)) >= self.required

    def expired(self, today: dt.date | None = None) -> bool:
        today = today or dt.datetime.now(dt.timezone.utc).date()
        return bool(self.expires) and today > dt.date.fromisoformat(self.expires)


class GovernanceStore:
    def __init__(self, path: Path):
        self.path = Path(path)

    def _load(self) -> dict:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def _save(self, data: dict) -> None:
        from .files import write_private

        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_private(self.path, json.dumps(data, indent=1))

    def get(self, request: str) -> Approval | None:
        record = self._load().get(request)
        return None if record is None else Approval(**record)

    def put(self, approval: Approval) -> None:
        data = self._load()
        data[approval.request] = asdict(approval)
        self._save(data)

    def for_study(self, study: str) -> list[Approval]:
        return [Approval(**r) for r in self._load().values() if r.get("study") == study]

    def check_study(self, study: str, today: dt.date | None = None) -> None:
        """Raise :class:`ApprovalExpired` if any approval of ``study`` here has expired."""
        self._check(self.for_study(study), today)

    def check_code(self, code: str, today: dt.date | None = None) -> None:
        """Raise :class:`ApprovalExpired` if the approval that lets Syft code ``code`` run has expired."""
        self._check([Approval(**r) for r in self._load().values() if r.get("code") == code], today)

    @staticmethod
    def _check(approvals: list[Approval], today: dt.date | None) -> None:
        for approval in approvals:
            if approval.expired(today):
                raise ApprovalExpired(f"the approval of {approval.function} (IRB {approval.irb or '-'}, DUA "
                                      f"{approval.dua or '-'}) expired on {approval.expires}; ask the hospital "
                                      "to renew it")
