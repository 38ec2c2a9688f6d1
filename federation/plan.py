"""A study plan: everything a hospital approves, fixed before the first round.

The plan travels inside each code request (a ``sy.Constant``), so the compliance
officer reads the privacy parameters next to the code, and the researcher cannot change
them after approval. Give ``epsilon`` (the whole study's budget at ``delta``) and the noise
is calibrated with Opacus' RDP accountant; or give ``noise_multiplier`` and the plan
reports the epsilon it will cost. Evaluation is private too: each evaluation call costs
``eval_epsilon`` (the last one ``final_eval_epsilon``, which the reported AUROC comes
from), so a site spends ``total_epsilon`` = DP-SGD epsilon + the evaluations' sum.
"""

from __future__ import annotations

import math
import numbers
import re
import warnings
from dataclasses import asdict, dataclass, field

from privacy import planned_epsilon, schedule

from .strategy import make_strategy
from .tasks import task_of

__all__ = ["StudyPlan", "PlanError"]

_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,59}$")


class PlanError(ValueError):
    """The plan cannot run as written; the message says what to change."""


MAX_ROUNDS, MAX_LOCAL_EPOCHS, MIN_SAMPLE_RATE = 1000, 100, 1e-4  # keep the accountant's work bounded
_INTS = ("rounds", "local_epochs", "seed", "evaluate_every", "min_sites", "secagg_threshold", "retries")
_FLOATS = ("lr", "sample_rate", "max_grad_norm", "epsilon", "noise_multiplier", "delta", "prox_mu", "eval_epsilon",
           "final_eval_epsilon", "deadline", "update_norm")
_OPTIONAL = ("min_sites", "secagg_threshold", "epsilon", "noise_multiplier", "update_norm")


def _typed(plan) -> list[str]:
    """Whole numbers, finite real numbers and flags of the right type (NaN and inf refused)."""
    problems = []
    for name in _INTS:
        value = getattr(plan, name)
        if value is None and name in _OPTIONAL:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            problems.append(f"{name} must be a whole number")
    for name in _FLOATS:
        value = getattr(plan, name)
        if value is None and name in _OPTIONAL:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            problems.append(f"{name} must be a finite number")
    if not isinstance(plan.secure_aggregation, bool):
        problems.append("secure_aggregation must be True or False")
    if not isinstance(plan.strategy_options, dict):
        problems.append("strategy_options must be a dict")
    return problems


@dataclass(frozen=True, kw_only=True)
class StudyPlan:
    study: str
    sites: tuple[str, ...]
    model: str = "lstm"
    strategy: str = "fedavg"
    rounds: int = 10
    local_epochs: int = 1
    lr: float = 0.005
    sample_rate: float = 0.05
    max_grad_norm: float = 1.0
    epsilon: float | None = 6.0
    noise_multiplier: float | None = None
    delta: float = 1e-5
    prox_mu: float = 0.1
    min_sites: int | None = None  # None: every site, in every round; else a round needs at least this many
    dataset: str = "icu-sepsis"
    asset: str = "sepsis_cohort"  # the dataset's analysis-ready asset the vetted jobs read
    seed: int = 0
    strategy_options: dict = field(default_factory=dict)
    secure_aggregation: bool = False  # sites mask their updates; the researcher sees only the sum
    secagg_threshold: int | None = None  # sites needed to unmask (default: a majority, at least 2)
    eval_epsilon: float = 0.25  # each evaluation during the study (noised score histograms)
    final_eval_epsilon: float = 1.0  # the evaluation after the last round (the reported AUROC)
    evaluate_every: int = 1  # evaluate after every k-th round; 0: only after the last round
    deadline: float = 900.0  # seconds one site call may take before the site is dropped from the round
    retries: int = 2  # further attempts when a site cannot be reached (backoff 2 s, 4 s, ...)
    update_norm: float | None = None  # each site shrinks its update to this L2 norm before it leaves (the job does)

    def __post_init__(self):
        object.__setattr__(self, "sites", tuple(self.sites))
        problems = _typed(self)
        if problems:  # anything below compares numbers: NaN, inf or a wrong type would slip through
            raise PlanError("invalid study plan:\n  - " + "\n  - ".join(problems))
        if not _ID.match(self.study):
            problems.append(f"study id {self.study!r}: start with a letter; letters, digits, '_' and '-' only (max 60)")
        if not self.sites or len(set(self.sites)) != len(self.sites):
            problems.append("sites: name at least one site, each once")
        try:
            task_of(self.model)
        except ValueError as exc:
            problems.append(str(exc))
        try:
            strategy = make_strategy(self.strategy, **self._strategy_kwargs())
        except (ValueError, TypeError) as exc:
            problems.append(f"strategy: {exc}")
        else:
            if strategy.inspects_updates and self.secure_aggregation:
                problems.append(f"strategy {self.strategy!r} reads each site's update, which secure aggregation "
                                "never shows; use fedavg, fedprox or fedbn with secure_aggregation")
            need = strategy.min_updates()
            if need > len(self.sites) or (self.min_sites is not None and need > self.min_sites):
                problems.append(f"strategy {self.strategy!r} needs at least {need} sites' updates each round; the "
                                f"plan has {len(self.sites)} sites (min_sites {self.min_sites})")
        if not 1 <= self.rounds <= MAX_ROUNDS or not 1 <= self.local_epochs <= MAX_LOCAL_EPOCHS:
            problems.append(f"rounds must be 1 to {MAX_ROUNDS} and local_epochs 1 to {MAX_LOCAL_EPOCHS}")
        if self.sample_rate < MIN_SAMPLE_RATE:
            problems.append(f"sample_rate must be at least {MIN_SAMPLE_RATE} (smaller batches take too many steps "
                            "to account)")
        if self.prox_mu < 0:
            problems.append("prox_mu must be zero or positive")
        if not 0 < self.sample_rate <= 1:
            problems.append(f"sample_rate must be in (0, 1], got {self.sample_rate}")
        if self.max_grad_norm <= 0:
            problems.append("max_grad_norm must be positive")
        if self.update_norm is not None and not 1e-6 <= self.update_norm <= 1e6:
            problems.append("update_norm must be between 1e-6 and 1e6 (the L2 norm a site's update is shrunk to)")
        if not 0 < self.delta < 1:
            problems.append(f"delta must be in (0, 1), got {self.delta}")
        if self.epsilon is None and self.noise_multiplier is None:
            problems.append("give epsilon (the study's budget) or noise_multiplier")
        if self.epsilon is not None and self.epsilon <= 0:
            problems.append("epsilon must be positive")
        if self.noise_multiplier is not None and self.noise_multiplier <= 0:
            problems.append("noise_multiplier must be positive: dp_train never trains without noise")
        if not (self.eval_epsilon > 0 and self.final_eval_epsilon > 0):
            problems.append("eval_epsilon and final_eval_epsilon must be positive: every evaluation is noised")
        if not 0 <= self.evaluate_every <= self.rounds:
            problems.append(f"evaluate_every must be between 0 (only after the last round) and {self.rounds}")
        if self.min_sites is not None and not 1 <= self.min_sites <= len(self.sites):
            problems.append(f"min_sites must be between 1 and {len(self.sites)}")
        if not 1 <= self.deadline <= 86400 or not 0 <= self.retries <= 10:
            problems.append("deadline must be 1 to 86400 seconds and retries 0 to 10")
        if self.secure_aggregation:
            if len(self.sites) < 2:
                problems.append("secure aggregation needs at least 2 sites (one site's sum is its update)")
            threshold = self.secagg_threshold or max(2, len(self.sites) // 2 + 1)
            if not 2 <= threshold <= len(self.sites) or 2 * threshold <= len(self.sites):
                problems.append(f"secagg_threshold must be more than half of the {len(self.sites)} sites (so that "
                                f"a lying relay cannot gather it for two survivor sets), at least 2, at most "
                                f"{len(self.sites)}")
            object.__setattr__(self, "secagg_threshold", threshold)
        if problems:
            raise PlanError("invalid study plan:\n  - " + "\n  - ".join(problems))
        if self.noise_multiplier is None:
            object.__setattr__(self, "noise_multiplier", self._calibrate())
        if self.epsilon is None:
            object.__setattr__(self, "epsilon", self.planned_epsilon())
        if self.epsilon > 10:
            warnings.warn(f"epsilon={self.epsilon:.1f} is a weak guarantee for patient records; "
                          "most health-data DP deployments stay at or below 8", UserWarning, stacklevel=3)
        if self.delta > 1e-4:
            warnings.warn(f"delta={self.delta} is large; use at most 1/(number of patients)", UserWarning,
                          stacklevel=3)

    def _strategy_kwargs(self) -> dict:
        kwargs = dict(self.strategy_options)
        if self.strategy == "fedprox":
            kwargs.setdefault("mu", self.prox_mu)
        return kwargs

    def make_strategy(self):
        return make_strategy(self.strategy, **self._strategy_kwargs())

    @property
    def steps_per_round(self) -> int:
        return self.local_epochs * schedule(self.sample_rate)[0]

    @property
    def total_steps(self) -> int:
        return self.rounds * self.steps_per_round

    def _calibrate(self) -> float:
        from opacus.accountants.utils import get_noise_multiplier

        return float(get_noise_multiplier(target_epsilon=self.epsilon, target_delta=self.delta,
                                          sample_rate=schedule(self.sample_rate)[1],
                                          steps=self.total_steps, accountant="rdp", epsilon_tolerance=0.005))

    def planned_epsilon(self, rounds: int | None = None) -> float:
        """Epsilon each site has spent after ``rounds`` rounds (default: all), as the sites'
        reviewers compute it."""
        rounds = self.rounds if rounds is None else rounds
        dp = {"rounds": rounds, "local_epochs": self.local_epochs, "sample_rate": self.sample_rate,
              "noise_multiplier": self.noise_multiplier, "delta": self.delta}
        return planned_epsilon(dp) if rounds else 0.0

    def evaluated_rounds(self) -> list[int]:
        """The rounds after which the study evaluates the global model (the last one always)."""
        every = self.evaluate_every
        return [r for r in range(1, self.rounds) if every and r % every == 0] + [self.rounds]

    @property
    def eval_epsilons(self) -> list[float]:
        """The epsilon of each evaluation call, in order (pinned in the approved plan)."""
        return [self.eval_epsilon] * (len(self.evaluated_rounds()) - 1) + [self.final_eval_epsilon]

    @property
    def evaluation_epsilon(self) -> float:
        return float(sum(self.eval_epsilons))

    @property
    def total_epsilon(self) -> float:
        """What the study costs each site: DP-SGD at ``delta`` plus the evaluations (pure DP)."""
        return self.planned_epsilon() + self.evaluation_epsilon

    def job_plan(self) -> dict:
        """The constant a site's vetted jobs receive (see ``datasites.jobs.training.PLAN_KEYS``)."""
        strategy = self.make_strategy()
        return {"study": self.study, "task": task_of(self.model).name, "dataset": self.dataset, "model": self.model,
                "rounds": self.rounds,
                "local_epochs": self.local_epochs, "lr": self.lr, "sample_rate": self.sample_rate,
                "noise_multiplier": self.noise_multiplier, "max_grad_norm": self.max_grad_norm,
                "epsilon": math.ceil(self.epsilon * 1000) / 1000, "delta": self.delta,
                "prox_mu": strategy.prox_mu, "local_layers": list(strategy.local_layers()), "seed": self.seed,
                "secure_aggregation": self.secure_aggregation, "secagg_threshold": self.secagg_threshold,
                "sites": list(self.sites), "update_norm": self.update_norm,
                "eval_epsilons": self.eval_epsilons}

    def to_dict(self) -> dict:
        return {**asdict(self), "sites": list(self.sites)}

    @classmethod
    def from_dict(cls, data: dict) -> "StudyPlan":
        return cls(**data)
