"""The models a study may train, and how a cohort becomes their inputs.

Inputs are standardised with fixed clinical reference values (public constants, the
same at every hospital), never with statistics of a site's private data, so that
standardisation leaks nothing and every site feeds the model the same scale.
Layers are Opacus-compatible (``DPLSTM``, ``LayerNorm``) so DP-SGD gets exact
per-sample gradients. Normalisation layers are named ``norm*``: FedBN keeps them local.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from synthetic_data.cohort import SEQUENCE_FEATURES

from .cohort import STATIC_FEATURES, sequence_columns

__all__ = ["MODELS", "build_model", "get_weights", "set_weights", "model_inputs", "NORM_PREFIX", "is_local"]

NORM_PREFIX = "norm"


def is_local(name: str, local) -> bool:
    """Whether layer ``name`` is one a site keeps (FedBN): a part of its dotted name starts
    with one of the ``local`` prefixes, so ``norm.weight`` and ``down.0.norm1.weight`` both are."""
    prefixes = tuple(local)
    return bool(prefixes) and any(part.startswith(prefixes) for part in name.split("."))

# (centre, scale) per charted variable: typical adult ICU values, not site statistics.
REFERENCE = {
    "heart_rate": (90.0, 20.0), "respiratory_rate": (20.0, 6.0), "temperature": (37.2, 1.0),
    "systolic_bp": (115.0, 20.0), "spo2": (95.0, 4.0), "wbc": (10.0, 5.0),
    "lactate": (2.0, 1.5), "creatinine": (1.2, 0.8),
}
AGE_REFERENCE = (60.0, 18.0)


def _lstm(n_features: int = len(SEQUENCE_FEATURES) + len(STATIC_FEATURES), hidden: int = 32):
    import torch
    from opacus.layers import DPLSTM

    class SepsisLSTM(torch.nn.Module):
        """Hourly vitals and labs (plus static covariates) -> DPLSTM -> LayerNorm -> logit of sepsis."""

        def __init__(self):
            super().__init__()
            self.lstm = DPLSTM(n_features, hidden, batch_first=True)
            self.norm = torch.nn.LayerNorm(hidden)
            self.head = torch.nn.Linear(hidden, 1)

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.head(self.norm(out[:, -1])).squeeze(-1)

    return SepsisLSTM()


def _mlp(n_features: int = len(STATIC_FEATURES) + 4 * len(SEQUENCE_FEATURES), hidden: int = 32):
    import torch

    class SepsisMLP(torch.nn.Module):
        """Static covariates and window summaries -> Linear -> LayerNorm -> ReLU -> logit of sepsis."""

        def __init__(self):
            super().__init__()
            self.hidden = torch.nn.Linear(n_features, hidden)
            self.norm = torch.nn.LayerNorm(hidden)
            self.head = torch.nn.Linear(hidden, 1)

        def forward(self, x):
            return self.head(torch.relu(self.norm(self.hidden(x)))).squeeze(-1)

    return SepsisMLP()


def _rwe_logreg(n_features: int = 14):
    import torch

    class ResponseModel(torch.nn.Module):
        """Logistic regression of objective response on biomarkers, treatment and their
        interactions (oncology RWE asset): the coefficients are the story, so no hidden layer."""

        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(n_features, 1)

        def forward(self, x):
            return self.head(x).squeeze(-1)

    return ResponseModel()


# name -> (constructor, input kind)
MODELS = {"lstm": (_lstm, "sequences"), "mlp": (_mlp, "tabular"), "rwe_logreg": (_rwe_logreg, "rwe")}


def build_model(name: str, *, seed: int = 0):
    """A freshly initialised model; the same ``seed`` gives the same initial weights."""
    import torch

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    torch.manual_seed(seed)
    return MODELS[name][0]()


def _plain_name(name: str) -> str:
    # Opacus' GradSampleModule prefixes parameter names with "_module."
    return name.removeprefix("_module.")


def get_weights(model) -> dict[str, np.ndarray]:
    return {_plain_name(k): v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def set_weights(model, weights: dict[str, np.ndarray]) -> None:
    """Load the given tensors (a subset is fine: the rest keep their values); refuses any
    layer of the wrong shape or with a NaN or infinite value (weights come from researchers)."""
    import torch

    state = model.state_dict()
    by_plain = {_plain_name(k): k for k in state}
    unknown = sorted(set(weights) - set(by_plain))
    if unknown:
        raise ValueError(f"weights for layers this model does not have: {unknown}")
    for name, value in weights.items():
        key = by_plain[name]
        value = np.asarray(value, dtype=np.float32)
        if value.shape != tuple(state[key].shape):
            raise ValueError(f"{name}: expected shape {tuple(state[key].shape)}, got {value.shape}")
        if not np.isfinite(value).all():
            raise ValueError(f"{name}: weights must be finite numbers (NaN or inf found)")
        state[key] = torch.from_numpy(value.copy())
    model.load_state_dict(state)


def _scaled(frame: pd.DataFrame, column: str) -> np.ndarray:
    values = frame[column].to_numpy(dtype=np.float32)
    centre, scale = AGE_REFERENCE if column == "age" else (0.0, 1.0)  # indicators stay 0/1
    return (values - centre) / scale


def model_inputs(frame: pd.DataFrame, model: str) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs, labels)`` for ``model`` from a cohort asset frame (see ``datasites.jobs.cohort``).

    LSTM: (patients, hours, 8 charted + 9 static); MLP: static plus each charted variable's
    mean, min, max and last value over the window.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {sorted(MODELS)}")
    labels = frame["label"].to_numpy(dtype=np.float32)
    if MODELS[model][1] == "rwe":
        return _rwe_inputs(frame), labels
    centre = np.array([REFERENCE[f][0] for f in SEQUENCE_FEATURES], np.float32)
    scale = np.array([REFERENCE[f][1] for f in SEQUENCE_FEATURES], np.float32)
    hours = sequence_columns(frame)
    seq = frame[[c for row in hours for c in row]].to_numpy(dtype=np.float32).reshape(len(frame), len(hours), -1)
    seq = (seq - centre) / scale
    static = np.stack([_scaled(frame, c) for c in STATIC_FEATURES], axis=1).astype(np.float32)
    if MODELS[model][1] == "tabular":
        summary = np.concatenate([seq.mean(1), seq.min(1), seq.max(1), seq[:, -1]], axis=1)
        return np.concatenate([static, summary], axis=1).astype(np.float32), labels
    x = np.concatenate([seq, np.repeat(static[:, None, :], seq.shape[1], axis=1)], axis=2)
    return x.astype(np.float32), labels


def _rwe_inputs(frame: pd.DataFrame) -> np.ndarray:
    """Age (reference-scaled), sex, stage (3/4 -> 0/1), five biomarkers, treatment, and
    treatment x biomarker: 14 columns for ``rwe_logreg``."""
    from synthetic_data.oncology import BIOMARKERS

    if "treated" not in frame.columns:
        raise ValueError("this frame has no 'treated' column; is it the rwe_cohort asset?")
    treated = frame["treated"].to_numpy(np.float32)
    markers = [frame[m].to_numpy(np.float32) for m in BIOMARKERS]
    columns = [_scaled(frame, "age"), frame["male"].to_numpy(np.float32),
               frame["stage"].to_numpy(np.float32) - 3.0, *markers, treated, *[treated * m for m in markers]]
    return np.stack(columns, axis=1).astype(np.float32)
