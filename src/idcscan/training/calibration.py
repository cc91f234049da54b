"""Temperature scaling (Guo et al., 2017): one scalar T so that sigmoid(logit / T) is calibrated.

Fine-tuned networks are over-confident; dividing every logit by one positive number fixes most
of that without changing the ranking (AUC) of any patch. T is fitted by minimising the
negative log-likelihood of the validation labels, never on test data.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

#: T is kept inside this range: beyond it the logits carry (almost) no information.
T_MIN, T_MAX = 0.05, 20.0


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64)) / temperature
    y = torch.as_tensor(np.asarray(labels, dtype=np.float64))
    return float(F.binary_cross_entropy_with_logits(z, y))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iter: int = 100) -> float:
    """The T minimising validation NLL of sigmoid(logits / T), by LBFGS on log T."""
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64)).ravel()
    y = torch.as_tensor(np.asarray(labels, dtype=np.float64)).ravel()
    if z.numel() == 0 or y.min() == y.max() or not torch.isfinite(z).all():
        return 1.0
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    t = float(log_t.detach().exp())
    if not np.isfinite(t):
        return 1.0
    return float(np.clip(t, T_MIN, T_MAX))


def calibrated_probs(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Same formula as the Predictor: sigmoid(logit / T), in float64."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64) / temperature))
