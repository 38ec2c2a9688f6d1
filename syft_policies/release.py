"""The release policy: what may leave a hospital, enforced by Syft at execution time.

Syft ships this class to the datasite as source and recompiles it there. It stays small:
the rules themselves (``syft_policies.release_rules``) are the site's installed code, so a
researcher who edits the class changes nothing but its digest, which the automatic review
compares with the site's own copy (rule R013). After every execution of an approved
request, before the researcher can read the output:

- row-level data (tables, long arrays, exports, identifiers, copies of the input's values)
  is blocked with a message saying why;
- counts below ``min_cell`` are suppressed;
- at most ``limit`` executions: after that Syft refuses to run the code again.
"""

from __future__ import annotations

from typing import Any

import syft as sy

__all__ = ["ReleasePolicy"]


class ReleasePolicy(sy.CustomOutputPolicy):
    limit: int = 1
    max_rows: int = 256
    min_cell: int = 10
    state: dict[Any, Any] = {}

    def __init__(self, limit: int = 1, max_rows: int = 256, min_cell: int = 10):
        self.limit = limit
        self.max_rows = max_rows
        self.min_cell = min_cell
        self.state = {"executions": 0, "blocked": 0}

    def apply_to_output(self, context, outputs, update_policy=True):
        from syft.types.errors import SyftException

        from syft_policies.release_rules import current_inputs, find_row_level_data, suppress_small_cells

        data = outputs.syft_action_data if hasattr(outputs, "syft_action_data") else outputs
        problem = find_row_level_data(data, max_rows=self.max_rows, frames=current_inputs())
        if problem:
            if update_policy:
                self.state["blocked"] += 1
            raise SyftException(public_message=f"blocked by the hospital's release policy: {problem}; "
                                               "only aggregated, noised outputs may leave")
        if update_policy:
            self.state["executions"] += 1
        return suppress_small_cells(data, min_cell=self.min_cell)

    def is_valid(self, context):
        from syft.types.errors import SyftException

        if self.state["executions"] >= self.limit:
            raise SyftException(public_message=f"the release policy allows {self.limit} executions; all are used")
        return True

    def public_state(self):
        return {"limit": self.limit, "executions": self.state["executions"], "blocked": self.state["blocked"]}
