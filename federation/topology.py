"""Hybrid topology: sites in regions, regional aggregators, one global aggregator, and
the sovereignty policy that says which contribution may go where.

GDPR keeps EU patients' data - and a single EU hospital's model update or statistics
count as such - inside the EU; HIPAA likewise for US hospitals here. So each site sends
its (masked or encrypted) contribution to its own region's aggregator, and only a
regional aggregate over at least ``min_sites_per_region`` hospitals crosses to the global
aggregator. A plan that breaks this is refused before any request is sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .plan import PlanError

__all__ = ["SiteInfo", "AggregationPlan", "SovereigntyPolicy", "SovereigntyViolation", "regional_plan",
           "GLOBAL"]

GLOBAL = "global-aggregator"


class SovereigntyViolation(PlanError):
    """The aggregation plan would move a contribution across a border; the message lists every flow."""


@dataclass(frozen=True)
class SiteInfo:
    name: str
    region: str  # EU / US
    jurisdiction: str  # GDPR / HIPAA

    @classmethod
    def from_spec(cls, spec) -> "SiteInfo":
        return cls(spec.name, spec.region, spec.jurisdiction)


@dataclass(frozen=True)
class AggregationPlan:
    """``routes``: site -> the aggregator it sends to; ``aggregators``: aggregator -> its region
    (``"GLOBAL"`` for the global one); ``upstream``: regional aggregator -> where its sum goes."""

    routes: dict[str, str]
    aggregators: dict[str, str]
    upstream: dict[str, str] = field(default_factory=dict)

    def members(self, aggregator: str) -> list[str]:
        return sorted(s for s, a in self.routes.items() if a == aggregator)


def regional_plan(sites: list[SiteInfo]) -> AggregationPlan:
    """Each region's sites to ``<region>-aggregator``, each regional sum to the global aggregator."""
    regions = sorted({s.region for s in sites})
    aggregators = {f"{r.lower()}-aggregator": r for r in regions} | {GLOBAL: "GLOBAL"}
    return AggregationPlan(routes={s.name: f"{s.region.lower()}-aggregator" for s in sites},
                           aggregators=aggregators, upstream={f"{r.lower()}-aggregator": GLOBAL for r in regions})


@dataclass(frozen=True)
class SovereigntyPolicy:
    min_sites_per_region: int = 2
    restricted: tuple[str, ...] = ("GDPR", "HIPAA")  # jurisdictions whose site contributions stay in-region

    def violations(self, plan: AggregationPlan, sites: list[SiteInfo]) -> list[str]:
        by_name = {s.name: s for s in sites}
        problems = []
        for site, aggregator in sorted(plan.routes.items()):
            info = by_name.get(site)
            if info is None:
                problems.append(f"{site} is not a known site")
                continue
            where = plan.aggregators.get(aggregator)
            if where is None:
                problems.append(f"{site} sends to {aggregator}, which the plan does not define")
            elif info.jurisdiction in self.restricted and where != info.region:
                problems.append(f"{site} ({info.region}, {info.jurisdiction}) would send its own contribution to "
                                f"{aggregator} in {where}: it must stay with an aggregator in {info.region}")
        for aggregator, region in sorted(plan.aggregators.items()):
            if region == "GLOBAL":
                continue
            members = plan.members(aggregator)
            target = plan.upstream.get(aggregator)
            if target is not None and plan.aggregators.get(target) != region and \
                    len(members) < self.min_sites_per_region:
                problems.append(f"{aggregator} would send a sum over {len(members)} site(s) across the border; "
                                f"a regional aggregate must cover at least {self.min_sites_per_region} hospitals")
        return problems

    def check(self, plan: AggregationPlan, sites: list[SiteInfo]) -> None:
        problems = self.violations(plan, sites)
        if problems:
            raise SovereigntyViolation("the aggregation plan breaks data sovereignty:\n  - " + "\n  - ".join(problems))
