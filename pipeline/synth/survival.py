"""The survival layer: event times from a known Weibull proportional-hazards model of planted image features.

Two competing causes. CVD death has cause-specific hazard
    h_cvd(t) = lambda_cvd * k * t^(k-1) * exp(beta_cvd . z)
and other deaths likewise with beta_other, where z = (heart size, frailty) are the standardised latent
features the images show (heart silhouette size; bone density and lung texture). All-cause death is the first
of the two; CVD death is the subset of deaths from the CVD cause, so the CVD endpoint is censored at other
deaths and a cause-specific Cox model of it recovers beta_cvd. Follow-up ends administratively at a
per-subject time in `follow_up` years (staggered enrolment), with a little loss to follow-up before that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

FEATURES = ("z_heart", "z_frailty")


@dataclass(frozen=True)
class SurvivalModel:
    """Parameters of the planted hazard model (defaults give ~20% CVD and ~45% all-cause death by the end of
    follow-up: enough events that ~190 test subjects separate at p < 0.001 under the true risk)."""

    shape: float = 1.3
    beta_cvd: tuple[float, float] = (1.1, 0.5)  # per SD of (heart size, frailty)
    beta_other: tuple[float, float] = (0.3, 0.8)
    risk_cvd_12y: float = 0.14  # at z = 0
    risk_other_12y: float = 0.17
    follow_up: tuple[float, float] = (13.0, 18.0)
    dropout_per_year: float = 0.004

    def scale(self, risk_12y: float) -> float:
        """Weibull lambda such that P(T <= 12) = risk_12y when z = 0."""
        return -np.log1p(-risk_12y) / 12.0**self.shape


def simulate_survival(z: np.ndarray, rng: np.random.Generator, model: SurvivalModel | None = None) -> pd.DataFrame:
    """Event times for subjects with features `z` (n, 2): columns time_all_years, death_all, time_cvd_years,
    death_cvd, cause ('cvd', 'other' or '' when censored)."""
    model = model or SurvivalModel()
    z = np.asarray(z, dtype=np.float64)
    n = len(z)
    t_cvd = _weibull_times(z @ np.asarray(model.beta_cvd), model.scale(model.risk_cvd_12y), model.shape, rng)
    t_other = _weibull_times(z @ np.asarray(model.beta_other), model.scale(model.risk_other_12y), model.shape, rng)
    admin = rng.uniform(*model.follow_up, size=n)
    dropout = rng.exponential(1.0 / model.dropout_per_year, size=n) if model.dropout_per_year > 0 else np.inf
    censor = np.minimum(admin, dropout)
    t_event = np.minimum(t_cvd, t_other)
    died = t_event <= censor
    time = np.where(died, t_event, censor)
    cvd = died & (t_cvd <= t_other)
    cause = np.where(cvd, "cvd", np.where(died, "other", ""))
    return pd.DataFrame(
        {
            "time_all_years": time,
            "death_all": died.astype(np.int64),
            "time_cvd_years": time,
            "death_cvd": cvd.astype(np.int64),
            "cause": cause,
        }
    )


def _weibull_times(eta: np.ndarray, scale: float, shape: float, rng: np.random.Generator) -> np.ndarray:
    """Inverse-CDF sampling: H(t) = scale * t^shape * exp(eta) = E, E ~ Exp(1)."""
    e = rng.exponential(1.0, size=len(eta))
    return (e / (scale * np.exp(eta))) ** (1.0 / shape)
