"""Deep SAD, and Deep SVDD as its special case without labelled anomalies, in torch.

References
----------
.. [1] Ruff, Vandermeulen, Goernitz, Deecke, Siddiqui, Binder, Müller, Kloft. "Deep One-Class
   Classification." ICML 2018 (Deep SVDD).
.. [2] Ruff, Vandermeulen, Goernitz, Binder, Müller, Müller, Kloft. "Deep Semi-Supervised
   Anomaly Detection." ICLR 2020 (Deep SAD).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .encoders import BiasFreeEncoder

__all__ = ["DeepSAD"]


class DeepSAD:
    r"""Deep SAD [2]_ on already-scaled features; Deep SVDD [1]_ when ``y`` has no attacks.

    The objective, with a centre :math:`c` fixed from a first forward pass over the benign
    training rows,

    .. math::
        \frac{1}{n + m} \Big( \sum_{i \le n} \lVert \phi(x_i) - c \rVert^2
        + \eta \sum_{j \le m} \big( \lVert \phi(\tilde x_j) - c \rVert^2 + \epsilon \big)^{-1}
        \Big)

    over ``n`` benign rows and ``m`` labelled known attacks; the anomaly score is
    :math:`\lVert \phi(x) - c \rVert^2`.

    NOTE[DIFF]: Ruff et al. treat their unlabelled rows as mostly normal; here the benign
    training flows play that part. They pretrain ``phi`` as an autoencoder and initialise ``c``
    from it; we initialise ``c`` from the randomly initialised network (as PyOD's Deep SVDD does)
    to keep the baseline cheap, and push coordinates of ``c`` near zero to ``+-eps`` as they do.

    Parameters
    ----------
    eta : float, default=1.0
        Weight of the labelled-anomaly term.
    hidden : sequence of int, default=(128, 64)
    rep_dim : int, default=32
    epochs : int, default=20
    batch_size : int, default=256
    lr : float, default=1e-3
    weight_decay : float, default=1e-6
    eps : float, default=1e-6
        Keeps the inverse distance finite.
    random_state : int or None, default=None

    Attributes
    ----------
    net_ : latent_sculpting.encoders.BiasFreeEncoder
    center_ : torch.Tensor
    history_ : list of float
        Mean loss per epoch.
    """

    def __init__(
        self,
        *,
        eta: float = 1.0,
        hidden: Sequence[int] = (128, 64),
        rep_dim: int = 32,
        epochs: int = 20,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 1e-6,
        eps: float = 1e-6,
        random_state: int | None = None,
    ) -> None:
        self.eta = eta
        self.hidden = hidden
        self.rep_dim = rep_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.eps = eps
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> DeepSAD:
        """Fit on scaled features ``X``; ``y`` is 1 for labelled known attacks (None: none)."""
        if self.eta < 0:
            raise ValueError(f"eta must be non-negative, got {self.eta}")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError(
                f"epochs must be >= 1 and batch_size >= 2, got {self.epochs}, {self.batch_size}"
            )
        X_t = torch.as_tensor(np.asarray(X, dtype=np.float32))
        y_t = torch.zeros(len(X_t)) if y is None else torch.as_tensor(np.asarray(y)).float()
        if len(y_t) != len(X_t):
            raise ValueError(f"y has {len(y_t)} entries but X has {len(X_t)} rows")
        if not (y_t == 0).any():
            raise ValueError("Deep SAD needs benign rows (y == 0) to place the centre")
        with torch.random.fork_rng(devices=[]):
            if self.random_state is not None:
                torch.manual_seed(self.random_state)
            self.net_ = BiasFreeEncoder(X_t.shape[1], latent_dim=self.rep_dim, hidden=self.hidden)
            self.center_ = self._initial_center(X_t[y_t == 0])
            optimizer = torch.optim.Adam(
                self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay
            )
            self.history_ = []
            for _ in range(self.epochs):
                self.net_.train()
                total, batches = 0.0, 0
                for batch in torch.randperm(len(X_t)).split(self.batch_size):
                    if len(batch) < 2:
                        continue  # batch norm needs two rows
                    dist = (self.net_(X_t[batch]) - self.center_).pow(2).sum(dim=1)
                    attack = y_t[batch] == 1
                    loss = torch.where(attack, self.eta / (dist + self.eps), dist).mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total, batches = total + loss.item(), batches + 1
                self.history_.append(total / max(batches, 1))
        self.net_.eval()
        return self

    @torch.no_grad()
    def _initial_center(self, X_benign: torch.Tensor, eps: float = 0.1) -> torch.Tensor:
        self.net_.eval()
        center = self.net_(X_benign).mean(dim=0)
        # A coordinate near zero would let a bias-free network map everything onto it.
        small = center.abs() < eps
        center[small] = torch.where(center[small] < 0, -eps, eps)
        return center

    @torch.no_grad()
    def transform(self, X: np.ndarray) -> np.ndarray:
        """The embedding ``phi(x)`` of each row, float32 of shape (n_samples, rep_dim)."""
        self.net_.eval()
        X_t = torch.as_tensor(np.asarray(X, dtype=np.float32))
        return torch.cat([self.net_(part) for part in X_t.split(8192)]).numpy()

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Squared distance of ``phi(x)`` to the centre; higher is more anomalous."""
        codes = torch.from_numpy(self.transform(X))
        return (codes - self.center_).pow(2).sum(dim=1).double().numpy()

    def get_state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """Fitted state as a JSON-able config and named tensors (no pickle)."""
        config = {"n_features": self.net_.net[0].in_features, "hidden": list(self.hidden)}
        config["rep_dim"] = self.rep_dim
        tensors = {"center": self.center_.detach().clone()}
        tensors.update({f"net.{k}": v.detach().clone() for k, v in self.net_.state_dict().items()})
        return config, tensors

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, torch.Tensor]) -> DeepSAD:
        """Rebuild a fitted model from :meth:`get_state` output (scoring only)."""
        model = cls(hidden=tuple(config["hidden"]), rep_dim=config["rep_dim"])
        model.net_ = BiasFreeEncoder(
            config["n_features"], latent_dim=config["rep_dim"], hidden=model.hidden
        )
        state = {k.removeprefix("net."): v for k, v in tensors.items() if k.startswith("net.")}
        model.net_.load_state_dict(state, strict=True)
        model.net_.eval()
        model.center_ = tensors["center"]
        return model
