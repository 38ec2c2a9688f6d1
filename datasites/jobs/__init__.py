"""What runs inside a hospital's isolated worker: the vetted jobs and the helpers they use.

Read this package to know everything an approved template request can do with private
data. It imports nothing from the datasite's server side (Syft, the ledger, the audit
log, the site's files): a job asks its :func:`site.hospital` for what it needs.

- ``training.dp_train``: one DP-SGD round (Opacus), the site's accountant continued;
- ``evaluation.evaluate``: aggregate metrics, small cells suppressed;
- ``secure_round.secure_train``: a round whose update leaves only masked (secagg);
- ``query.dp_query``: the DP query job (OpenDP): counts, sums, means, histograms,
  quantiles, contingency tables and regression statistics over declared columns;
- ``analytics.dp_prevalence``: noised patient and case counts (a fixed query plan);
- ``summary.cohort_summary``: noised ICU cohort size, prevalence and mean age (a fixed
  query plan on the raw Synthea tables, epsilon 1 a call);
- ``rwe.rwe_statistics``: DP-noised, HE-encrypted, signed oncology statistics;
- ``runner``: the worker process itself; ``wire``: the data-only format of its replies.
"""

from importlib import import_module

__all__ = ["dp_train", "evaluate", "secure_train", "dp_query", "dp_prevalence", "cohort_summary", "rwe_statistics"]

_WHERE = {"dp_train": "training", "evaluate": "evaluation", "secure_train": "secure_round",
          "dp_prevalence": "analytics", "dp_query": "query", "cohort_summary": "summary", "rwe_statistics": "rwe"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'datasites.jobs' has no attribute {name!r}")
