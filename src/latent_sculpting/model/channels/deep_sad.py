"""Deep SAD, and Deep SVDD as its special case without labelled anomalies, in torch.

Two users: the ``deep-svdd`` and ``deep-sad`` baselines of ``sculpt compare``, and the
``default`` preset's benign-only embedding beside the sculpted code (``svdd_dim``).

References
----------
.. [1] Ruff, Vandermeulen, Goernitz, Deecke, Siddiqui, Binder, Müller, Kloft. "Deep One-Class
   Classification." ICML 2018 (Deep SVDD).
.. [2] Ruff, Vandermeulen, Goernitz, Binder, Müller, Müller, Kloft. "Deep Semi-Supervised
   Anomaly Detection." ICLR 2020 (Deep SAD).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from latent_sculpting.model.state import (
    MAX_LAYERS,
    MAX_WIDTH,
    Layout,
    assign,
    check_int,
    check_layout,
    check_object,
    check_tensor,
    few,
    meta_layout,
    meta_module,
)
from latent_sculpting.model.training import train_epochs

__all__ = ["BiasFreeEncoder", "DeepSAD"]


class BiasFreeEncoder(nn.Module):
    """A bias-free MLP with non-affine batch norm, the network of Deep SVDD / Deep SAD [1]_.

    ``[Linear(bias=False) -> BatchNorm1d(affine=False) -> LeakyReLU] per hidden width ->
    Linear(bias=False)``. Without bias terms no constant code is reachable, so pulling benign
    codes together cannot collapse the whole space onto one point: codes of flows unlike anything
    seen in training stay away from the benign centre, which is what zero-shot detection needs.

    Parameters
    ----------
    n_features : int
    latent_dim : int, default=32
    hidden : sequence of int, default=(128, 64)
        Widths of the hidden layers.
    """

    def __init__(
        self, n_features: int, *, latent_dim: int = 32, hidden: Sequence[int] = (128, 64)
    ) -> None:
        super().__init__()
        if n_features < 1 or latent_dim < 1 or any(h < 1 for h in hidden):
            raise ValueError(
                "n_features, latent_dim and the hidden widths must be positive, got "
                f"{n_features=}, {latent_dim=}, {hidden=}"
            )
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h, bias=False), nn.BatchNorm1d(h, affine=False)]
            layers.append(nn.LeakyReLU())
            width = h
        layers.append(nn.Linear(width, latent_dim, bias=False))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


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
    net_ : BiasFreeEncoder
    center_ : torch.Tensor
    history_ : list of float
        Mean loss per epoch.
    training_events_ : list of dict
        The training loop's reports (restarted epochs, skipped batches;
        :func:`~latent_sculpting.model.training.train_epochs`).
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

            def batch_loss(batch: torch.Tensor) -> torch.Tensor:
                dist = (self.net_(X_t[batch]) - self.center_).pow(2).sum(dim=1)
                attack = y_t[batch] == 1
                return torch.where(attack, self.eta / (dist + self.eps), dist).mean()

            self.training_events_: list[dict] = []
            self.history_ = train_epochs(
                batch_loss,
                optimizer,
                modules=[self.net_],
                n_rows=len(X_t),
                batch_size=self.batch_size,
                epochs=self.epochs,
                min_batch_rows=2,  # batch norm needs two rows
                desc="Deep SAD" if (y_t == 1).any() else "Deep SVDD",
                events=self.training_events_,
            )
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

    @staticmethod
    def check_config(config: Any) -> tuple[int, tuple[int, ...], int]:
        """The input width, hidden widths and embedding width of a stored config, checked."""
        config = check_object(config, "its config", {"n_features", "hidden", "rep_dim"})
        hidden = config["hidden"]
        if not isinstance(hidden, list) or len(hidden) > MAX_LAYERS:
            raise ValueError(f"hidden must be a list of at most {MAX_LAYERS} widths")
        hidden = tuple(check_int(h, "a hidden width", 1, MAX_WIDTH) for h in hidden)
        n_features = check_int(config["n_features"], "n_features", 1, 2**31)
        return n_features, hidden, check_int(config["rep_dim"], "rep_dim", 1, MAX_WIDTH)

    @classmethod
    def layout(cls, config: Any) -> Layout:
        """The network's state layout that a stored config defines (no memory)."""
        n_features, hidden, rep_dim = cls.check_config(config)
        return meta_layout(lambda: BiasFreeEncoder(n_features, latent_dim=rep_dim, hidden=hidden))

    @classmethod
    def from_state(cls, config: Any, tensors: dict[str, torch.Tensor]) -> DeepSAD:
        """Rebuild a fitted model from :meth:`get_state` output (scoring only).

        Every tensor is checked against the :meth:`layout` before the network is built (on the
        meta device, then holding the given tensors): the centre, the network's weights and
        batch-norm statistics (finite, variances and counts not negative).

        Raises
        ------
        ValueError
            If the config is malformed, or a tensor is missing, unknown, of another shape or
            dtype, or out of range.
        """
        n_features, hidden, rep_dim = cls.check_config(config)
        state = dict(tensors)
        center = state.pop("center", None)
        if center is None or tuple(center.shape) != (rep_dim,):
            shape = None if center is None else tuple(center.shape)
            raise ValueError(f"Deep SVDD centre must have shape ({rep_dim},), got {shape}")
        check_tensor(center, "'svdd.center'", torch.float32, (rep_dim,))
        if any(not k.startswith("net.") for k in state):
            raise ValueError(f"unknown tensors {few(sorted(state))}")
        net = {k.removeprefix("net."): v for k, v in state.items()}
        check_layout(cls.layout(config), net)
        for key, value in net.items():
            if key.endswith("running_var") and bool((value < 0).any()):
                raise ValueError(f"{key} holds negative variances")
            if key.endswith("num_batches_tracked") and int(value) < 0:
                raise ValueError(f"{key} is negative")
        model = cls(hidden=hidden, rep_dim=rep_dim)
        build = lambda: BiasFreeEncoder(n_features, latent_dim=rep_dim, hidden=hidden)  # noqa: E731
        model.net_ = assign(meta_module(build), net).eval()
        model.center_ = center
        return model
