"""The researcher's side of the DP query job: one request per hospital, noised answers pooled.

A query plan (``privacy.queries``) goes to every hospital as the ``dp_query`` template, so
each officer sees the same low-risk template and the plan's epsilon. Pooling is
post-processing of noised numbers, so it costs nothing more: counts, sums, histograms and
tables add up across sites, means divide pooled sums by pooled counts, regression
coefficients solve the pooled noised normal equations. A quantile is each site's own DP
choice among the candidates; the pooled figure is their mean (an approximation: the
pooled quantile would need the pooled rows). Receipts add up per site, call after call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from privacy.queries import check_query_plan, query_epsilon

from .requests import fetch_result, request_status, submit_request

__all__ = ["DPQuery", "QueryResult", "combine_queries", "solve_regression", "query_plan"]


def query_plan(study: str, *queries: dict) -> dict:
    """``{"study": study, "queries": [...]}``, checked here first (the hospital checks again)."""
    plan = {"study": study, "queries": list(queries)}
    check_query_plan(plan)
    return plan


@dataclass
class QueryResult:
    pooled: dict  # query name -> pooled answer
    sites: dict  # site -> that site's noised reply
    epsilon: dict = field(default_factory=dict)  # site -> epsilon this call cost there
    spent: dict = field(default_factory=dict)  # site -> epsilon all this helper's calls cost there

    def receipts(self) -> dict:
        """Site -> {query name: receipt} and the call's total (``"total"``)."""
        return {site: {**{name: a["receipt"] for name, a in reply["answers"].items()}, "total": reply["receipt"]}
                for site, reply in self.sites.items()}


class DPQuery:
    """``plan`` run on ``asset`` of ``dataset`` at every site in ``clients`` (site -> client)."""

    def __init__(self, plan: dict, clients: dict, *, dataset: str = "icu-sepsis", asset: str = "sepsis_cohort",
                 name: str | None = None, calls: int = 1):
        check_query_plan(plan)
        self.plan, self.clients, self.dataset, self.asset, self.calls = plan, dict(clients), dataset, asset, calls
        self.name = name or f"dp_query_{plan['study'].replace('-', '_').replace('.', '_')}"
        self.spent = {site: 0.0 for site in self.clients}  # what this helper's calls have cost each site

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
        """One call at every site: each site's noised answers and receipts, and the pooled answers."""
        replies = {site: fetch_result(client, self.name, cohort=self._asset(client))
                   for site, client in self.clients.items()}
        epsilon = {site: float(r["receipt"]["epsilon"]) for site, r in replies.items()}
        for site, value in epsilon.items():
            self.spent[site] = self.spent.get(site, 0.0) + value
        return QueryResult(combine_queries(self.plan, replies), replies, epsilon, dict(self.spent))


def solve_regression(terms: list[str], upper) -> dict[str, float]:
    """Least-squares coefficients from a noised upper triangle of z'z (z = 1, x..., y)."""
    k = len(terms)
    full = np.zeros((k, k))
    full[np.triu_indices(k)] = np.asarray(upper, float)
    full = full + np.triu(full, 1).T
    gram, cross = full[:-1, :-1], full[:-1, -1]
    coef = np.linalg.lstsq(gram, cross, rcond=None)[0]
    return {("intercept" if t == "1" else t): float(c) for t, c in zip(terms[:-1], coef)}


def combine_queries(plan: dict, replies: dict[str, dict]) -> dict:
    """Pool the sites' noised answers query by query (post-processing: no privacy cost)."""
    pooled = {}
    for q in check_query_plan(plan):
        answers = [r["answers"][q["name"]] for r in replies.values()]
        kind, name = q["kind"], q["name"]
        if kind == "count":
            pooled[name] = {"count": np.sum([a["count"] for a in answers], axis=0).tolist()}
        elif kind in ("sum", "mean"):
            sums = np.sum([a["sum"] for a in answers], axis=0)
            out = {"sum": sums.tolist()}
            if kind == "mean":
                counts = np.sum([a["count"] for a in answers], axis=0)
                out.update(count=counts.tolist(), mean=[float(s / c) if c > 0 else None for s, c in zip(sums, counts)])
            pooled[name] = out
        elif kind == "histogram":
            pooled[name] = {"edges": q["edges"], "counts": np.sum([a["counts"] for a in answers], axis=0).tolist()}
        elif kind == "contingency":
            pooled[name] = {"levels": q["levels"], "tables": np.sum([a["tables"] for a in answers], axis=0).tolist()}
        elif kind == "quantile":
            sites = {site: [q["candidates"][i] for i in r["answers"][name]["index"]] for site, r in replies.items()}
            pooled[name] = {"sites": sites, "quantile": np.mean(list(sites.values()), axis=0).tolist()}
        else:
            terms = ["1", *q["x"], q["y"]]
            upper = np.sum([a["upper_triangle"] for a in answers], axis=0)
            pooled[name] = {"terms": terms, "upper_triangle": upper.tolist(),
                            "coefficients": [solve_regression(terms, u) for u in upper]}
    return pooled
