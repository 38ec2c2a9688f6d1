"""The researcher's side of the DP query job: one request per hospital, noised answers pooled.

A query plan (``privacy.queries``) goes to every hospital as the ``dp_query`` template, so
each officer sees the same low-risk template and the plan's epsilon. Pooling is
post-processing of noised numbers: counts, sums, histograms and tables add up across
sites, means divide pooled sums by pooled counts, quantiles are read off the pooled
histogram, and regression coefficients solve the pooled noised normal equations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from privacy.queries import check_query_plan, query_epsilon

from .requests import fetch_result, request_status, submit_request

__all__ = ["DPQuery", "QueryResult", "combine"]


@dataclass
class QueryResult:
    pooled: dict  # query name -> pooled answer
    sites: dict  # site -> that site's noised reply
    epsilon: dict = field(default_factory=dict)  # site -> epsilon this call cost there


class DPQuery:
    """``plan`` run on ``asset`` of ``dataset`` at every site in ``clients`` (site -> client)."""

    def __init__(self, plan: dict, clients: dict, *, dataset: str = "icu-sepsis", asset: str = "sepsis_cohort",
                 name: str | None = None, calls: int = 1):
        check_query_plan(plan)
        self.plan, self.clients, self.dataset, self.asset, self.calls = plan, dict(clients), dataset, asset, calls
        self.name = name or f"dp_query_{str(plan.get('study', 'query')).replace('-', '_')}"

    @property
    def epsilon(self) -> float:
        """What one call costs each site (the whole approved request: ``calls`` times this)."""
        return query_epsilon(self.plan)

    def _asset(self, client):
        from syft_policies.quiet import quiet

        with quiet():
            return {a.name: a for a in client.datasets[self.dataset].assets}[self.asset]

    def submit(self) -> dict[str, str]:
        """One ``dp_query`` request per site (skipped where it was already sent)."""
        import syft as sy

        from syft_policies.quiet import quiet
        from syft_policies.release import ReleasePolicy
        from syft_policies.templates import medsyft_dp_query

        ids = {}
        for site, client in self.clients.items():
            try:
                request_status(client, self.name)
                continue
            except LookupError:
                pass
            with quiet():
                function = sy.syft_function(
                    input_policy=sy.MixedInputPolicy(client=client, cohort=self._asset(client),
                                                     plan=sy.Constant(val=self.plan)),
                    output_policy=ReleasePolicy(limit=self.calls), name=self.name)(medsyft_dp_query)
            ids[site] = submit_request(client, function)
        return ids

    def status(self) -> dict[str, str]:
        return {site: request_status(client, self.name).status for site, client in self.clients.items()}

    def run(self) -> QueryResult:
        """Each approved site's noised answers, and the pooled ones."""
        replies = {site: fetch_result(client, self.name, cohort=self._asset(client))
                   for site, client in self.clients.items()}
        return QueryResult(combine(self.plan, replies), replies,
                           {s: float(r["receipt"]["epsilon"]) for s, r in replies.items()})


def _solve(terms: list[str], upper: np.ndarray) -> dict[str, float]:
    k = len(terms)
    full = np.zeros((k, k))
    full[np.triu_indices(k)] = upper
    full = full + np.triu(full, 1).T
    gram, cross = full[:-1, :-1], full[:-1, -1]
    coef = np.linalg.lstsq(gram, cross, rcond=None)[0]
    return {("intercept" if t == "1" else t): float(c) for t, c in zip(terms[:-1], coef)}


def combine(plan: dict, replies: dict[str, dict]) -> dict:
    """Pool the sites' noised answers query by query (post-processing: no privacy cost)."""
    from datasites.jobs.query import _read_quantile

    pooled = {}
    for q in check_query_plan(plan):
        answers = [r["answers"][q["name"]] for r in replies.values()]
        kind = q["kind"]
        if kind == "count":
            pooled[q["name"]] = {"count": np.sum([a["count"] for a in answers], axis=0).tolist()}
        elif kind in ("sum", "mean"):
            sums = np.sum([a["sum"] for a in answers], axis=0)
            out = {"sum": sums.tolist()}
            if kind == "mean":
                counts = np.sum([a["count"] for a in answers], axis=0)
                out.update(count=counts.tolist(), mean=[s / c if c > 0 else None for s, c in zip(sums, counts)])
            pooled[q["name"]] = out
        elif kind in ("histogram", "quantile"):
            counts = np.sum([a["counts"] for a in answers], axis=0)
            out = {"counts": counts.tolist()}
            if kind == "quantile":
                out["quantile"] = [_read_quantile(c, np.asarray(q["candidates"], float), float(q["q"])) for c in counts]
            pooled[q["name"]] = out
        elif kind == "contingency":
            pooled[q["name"]] = {"tables": np.sum([a["tables"] for a in answers], axis=0).tolist()}
        else:
            upper = np.sum([a["upper_triangle"] for a in answers], axis=0)
            terms = answers[0]["terms"]
            pooled[q["name"]] = {"coefficients": [_solve(terms, u) for u in upper]}
    return pooled
