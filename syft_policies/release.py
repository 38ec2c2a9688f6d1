"""The release policy: what may leave a hospital, enforced by Syft at execution time.

Syft ships this class to the datasite as source and recompiles it there, so it is one
self-contained class (imports inside methods, state in a dict attribute). After every
execution of an approved request it inspects the output before the researcher can get it:

- a table (pandas DataFrame / Series) never leaves;
- an array or list longer than ``max_rows`` along any axis is row-level data and is blocked
  (model weights are far smaller: the LSTM's largest matrix has 128 rows);
- strings shaped like identifiers (UUIDs, SSNs, Synthea M-ids) are blocked;
- counts (keys such as ``n``, ``count``, ``cases``) below ``min_cell`` are replaced by None;
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
        import re

        from syft.types.errors import SyftException

        identifier = re.compile(r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
                                r"|\d{3}-\d{2}-\d{4}|M?[0-9a-f]{32})$", re.IGNORECASE)
        count_keys = ("n", "count", "counts", "cases", "patients", "n_positive", "positives", "negatives")

        def check(value, path):
            kind = type(value).__name__
            if kind in ("DataFrame", "Series", "Index"):
                return f"{path or 'the output'} is a table ({kind})"
            shape = getattr(value, "shape", None)
            if shape is not None and len(shape) > 0 and max(shape) > self.max_rows:
                return f"{path or 'the output'} has {max(shape)} entries along one axis (more than {self.max_rows})"
            if isinstance(value, (list, tuple, set)):
                if len(value) > self.max_rows:
                    return f"{path or 'the output'} lists {len(value)} items (more than {self.max_rows})"
                for i, item in enumerate(value):
                    problem = check(item, f"{path}[{i}]")
                    if problem:
                        return problem
            if isinstance(value, dict):
                for key, item in value.items():
                    problem = check(item, f"{path}.{key}" if path else str(key))
                    if problem:
                        return problem
            if isinstance(value, (str, bytes)) and identifier.match(value if isinstance(value, str) else ""):
                return f"{path or 'the output'} looks like a patient identifier"
            return None

        def suppress(value):
            if isinstance(value, dict):
                out = {}
                for key, item in value.items():
                    small = isinstance(item, int) and not isinstance(item, bool) and 0 < item < self.min_cell
                    out[key] = None if (small and str(key).lower() in count_keys) else suppress(item)
                return out
            if isinstance(value, list):
                return [suppress(v) for v in value]
            return value

        data = outputs.syft_action_data if hasattr(outputs, "syft_action_data") else outputs
        problem = check(data, "")
        if problem:
            if update_policy:
                self.state["blocked"] += 1
            raise SyftException(public_message=f"blocked by the hospital's release policy: {problem}; "
                                               "only aggregated, noised outputs may leave")
        if update_policy:
            self.state["executions"] += 1
        return suppress(data)

    def is_valid(self, context):
        from syft.types.errors import SyftException

        if self.state["executions"] >= self.limit:
            raise SyftException(public_message=f"the release policy allows {self.limit} executions; all are used")
        return True

    def public_state(self):
        return {"limit": self.limit, "executions": self.state["executions"], "blocked": self.state["blocked"]}
