"""The fast scoring path: the same math as the training modules, arranged for inference.

Scoring is the hot loop of a detector that watches millions of flows, so the estimator scores
through this module rather than through the modules as trained. Three choices, each picked by
measurement (``benchmarks/speed/run.py``; the figures are in ``BENCHMARKS.md``):

* **The MAF as plain masked matmuls.** zuko builds a lazy distribution object on every call,
  multiplies every mask into its weight and evaluates the MADE outputs through generic
  ``Transform`` objects. :class:`FastMAF` multiplies the masks in once, stacks the shift and
  scale rows of each MADE output layer so that one matmul yields both, and accumulates the
  log-determinant in place. The result equals zuko's ``log_prob`` to float rounding.
* **Cache-sized chunks.** The encoders' activations at large batches (the CNN-Transformer holds
  a batch x 32 tokens x 256 FFN units) stream through memory several times per layer; chunks of
  about 8k token rows (256 flows for the CNN-Transformer, 100 for the FT-Transformer, 8192 for
  the MLP) keep them near the cache. Encoders run in eval mode under ``inference_mode``, so
  ``nn.TransformerEncoderLayer`` takes PyTorch's fused attention path.
* **One intra-op thread** (:func:`latent_sculpting.threads.scoring_threads`), and BLAS held
  at one thread while a large input is scored
  (:func:`~latent_sculpting.threads.single_thread_blas`): OpenBLAS's threads
  meet at a barrier after every product too, and on a shared machine the neighbour channel's
  products ran several times slower on two threads than on one.
* **Blocks on worker threads, not threads inside operators.** A large input is cut into
  :data:`SCORE_BLOCK`-row blocks that :func:`map_blocks` hands to a small pool of worker
  threads (:func:`set_scoring_workers`), each block scored from end to end on one thread: torch,
  NumPy's matrix products and ufuncs, and the tree kernel release the GIL, and the workers
  never wait for each other inside a block. The blocks are the same whatever the number of
  workers, each computed as one thread computes it, so the scores are the same to the bit; and
  every chunk inside scoring (:data:`FLOW_CHUNK`, the neighbour channel's products) divides
  :data:`SCORE_BLOCK`, so a row meets the same chunk boundaries as in the 65,536-row blocks
  scoring used before.

Reduced precision (bf16 autocast) and int8 dynamic quantisation are measured by the benchmark
but are not the default: the default must match the reference path within 1e-4.

Set the environment variable ``LATENT_SCULPTING_REFERENCE_SCORING=1`` (or a model's
``parts_.reference_path = True``) to score through the plain PyTorch modules instead; the
equivalence tests and the benchmark use it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch
from torch import nn

from latent_sculpting.threads import scoring_threads, single_thread_blas

__all__ = [
    "FLOW_CHUNK",
    "SCORE_BLOCK",
    "SCORING_WORKERS_ENV",
    "FastMAF",
    "encode",
    "encoder_chunk",
    "flow_nll",
    "map_blocks",
    "reference_scoring",
    "run_chunked",
    "scoring_workers",
    "set_scoring_workers",
]

_T = TypeVar("_T")

#: Token rows per encoder chunk (rows x tokens per row); see the module docstring.
ENCODER_TOKENS = 8192
#: Rows per chunk of the flow.
FLOW_CHUNK = 1024
#: Fewest rows a product of the fast path takes: fewer are padded with copies of the last.
#: BLAS sums a product of one to three rows in another order than a larger one (a
#: matrix-vector kernel, a narrow tile); padding gives a flow the same float32 roundings alone
#: as in a batch.
MIN_PRODUCT_ROWS = 8
#: Rows per batch of the reference path.
REFERENCE_BATCH = 8192
#: Rows a scoring worker takes at a time: a multiple of :data:`FLOW_CHUNK` and of the
#: neighbour channel's product block, small enough that a block's float64 features stay near
#: the cache and that two workers share the blocks of a batch evenly.
SCORE_BLOCK = 4096
#: Environment variable with the number of scoring workers (default 1).
SCORING_WORKERS_ENV = "LATENT_SCULPTING_SCORING_WORKERS"

_ENV = "LATENT_SCULPTING_REFERENCE_SCORING"
_workers: int | None = None


def set_scoring_workers(n: int | None) -> int | None:
    """Set how many worker threads score a large input's blocks, for the whole process.

    Parameters
    ----------
    n : int or None
        Workers (1 scores on the calling thread alone); None goes back to
        :data:`SCORING_WORKERS_ENV` (default 1).

    Returns
    -------
    int or None
        The previous setting, to restore it.

    Raises
    ------
    ValueError
        If ``n`` is below 1.
    """
    global _workers
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"scoring workers must be an integer >= 1, got {n!r}")
    previous, _workers = _workers, n
    return previous


def scoring_workers() -> int:
    """Worker threads of scoring: :func:`set_scoring_workers`'s, else the environment's, else 1.

    Raises
    ------
    ValueError
        If :data:`SCORING_WORKERS_ENV` is set to anything but an integer >= 1.
    """
    if _workers is not None:
        return _workers
    value = os.environ.get(SCORING_WORKERS_ENV, "").strip()
    if not value:
        return 1
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{SCORING_WORKERS_ENV} must be an integer >= 1, got {value!r}")
    return int(value)


def map_blocks(score: Callable[[_T], dict], blocks: Sequence[_T], workers: int) -> list[dict]:
    """``[score(b) for b in blocks]``, on up to ``workers`` threads when there are several
    blocks; BLAS stays at one thread throughout
    (:func:`~latent_sculpting.threads.single_thread_blas`)."""
    with single_thread_blas():
        if workers <= 1 or len(blocks) <= 1:
            return [score(block) for block in blocks]
        with ThreadPoolExecutor(min(workers, len(blocks)), "sculpt-score") as pool:
            return list(pool.map(score, blocks))


def reference_scoring() -> bool:
    """True when the environment asks for the plain PyTorch scoring path."""
    return os.environ.get(_ENV, "").strip().lower() not in ("", "0", "false", "no")


class FastMAF(nn.Module):
    """Negative log-likelihood of a zuko MAF as plain masked matmuls (inference only).

    Each MADE transform of zuko's MAF maps ``x`` to ``(shift, a)`` with a masked MLP, sets
    ``log_scale = a / (1 + |a / log(slope)|)`` (zuko's ``MonotonicAffineTransform``) and
    ``x <- x * exp(log_scale) + shift``; the log-density is the standard normal log-density of
    the result plus the summed log-scales. This module computes exactly that, with the masks
    multiplied into copies of the weights once, at construction.

    Parameters
    ----------
    maf : zuko.flows.MAF
        A MAF whose transforms are ``MaskedAutoregressiveTransform`` with the default
        monotonic affine univariate transform and no context (what
        :class:`~latent_sculpting.model.density.maf.LatentDensity` builds).

    Raises
    ------
    TypeError
        If a transform is of another kind.
    """

    def __init__(self, maf: nn.Module) -> None:
        super().__init__()
        from zuko.flows.autoregressive import MaskedAutoregressiveTransform
        from zuko.transforms import MonotonicAffineTransform

        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.depths: list[int] = []
        features = None
        for transform in maf.transform.transforms:
            if not isinstance(transform, MaskedAutoregressiveTransform) or (
                transform.univariate is not MonotonicAffineTransform
            ):
                raise TypeError(
                    f"FastMAF handles masked affine autoregressive transforms only, got "
                    f"{type(transform).__name__} with {getattr(transform, 'univariate', None)}"
                )
            layers = [m for m in transform.hyper if hasattr(m, "mask")]
            others = [m for m in transform.hyper if not hasattr(m, "mask")]
            if any(not isinstance(m, nn.ReLU) for m in others) or transform.total != 2:
                raise TypeError("FastMAF expects ReLU MADEs with (shift, scale) outputs")
            for i, layer in enumerate(layers):
                weight = (layer.mask * layer.weight).detach().clone()
                bias = layer.bias.detach().clone()
                if i == len(layers) - 1:
                    # zuko interleaves (shift_0, scale_0, shift_1, ...); put all shifts first.
                    weight = torch.cat([weight[0::2], weight[1::2]])
                    bias = torch.cat([bias[0::2], bias[1::2]])
                self.weights.append(nn.Parameter(weight.contiguous(), requires_grad=False))
                self.biases.append(nn.Parameter(bias, requires_grad=False))
            self.depths.append(len(layers))
            features = layers[-1].weight.shape[0] // 2
        self.features = int(features)
        self.log_slope = math.log(1e-3)  # zuko's MonotonicAffineTransform default slope
        self.log_norm = 0.5 * self.features * math.log(2 * math.pi)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of each row of ``z``, shape ``(batch,)``."""
        x = z
        ladj = torch.zeros(len(z), dtype=z.dtype, device=z.device)
        k = 0
        for depth in self.depths:
            h = x
            for i in range(depth):
                h = torch.addmm(self.biases[k], h, self.weights[k].t())
                if i < depth - 1:
                    h = torch.relu_(h)
                k += 1
            shift, a = h[:, : self.features], h[:, self.features :]
            log_scale = a / (1 + (a / self.log_slope).abs())
            x = torch.addcmul(shift, x, log_scale.exp())
            ladj += log_scale.sum(dim=1)
        return 0.5 * x.square().sum(dim=1) + self.log_norm - ladj


def run_chunked(module: nn.Module, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """``module(x)`` computed ``chunk`` rows at a time (rows must be independent), each
    product of at least :data:`MIN_PRODUCT_ROWS` rows.

    Unpadded, the flow's NLL of a flow scored alone or in a batch of two or three differed from
    its NLL in a larger batch by a float32 step (1.5e-5 at 72). Where benign flows repeat, the
    reference NLLs that a score's tail interpolates between sit that close together, and the
    step moved a Zeek flow's fused score by 5e-4."""
    if len(x) <= chunk:
        return _one_product(module, x)
    return torch.cat([_one_product(module, part) for part in x.split(chunk)])


def _one_product(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    n = len(x)
    if n < MIN_PRODUCT_ROWS:
        padded = torch.cat([x, x[-1:].expand(MIN_PRODUCT_ROWS - n, *x.shape[1:])])
        return module(padded)[:n]
    return module(x)


def encoder_chunk(encoder: nn.Module | None) -> int:
    """Rows per chunk for ``encoder``: about :data:`ENCODER_TOKENS` token rows per chunk."""
    tokens = 1
    if hasattr(encoder, "position"):  # CNNTransformerEncoder: one token per pooled position
        tokens = encoder.position.shape[1]
    elif hasattr(encoder, "cls"):  # FTTransformerEncoder: one token per feature, plus CLS
        tokens = encoder.weight.shape[0] + 1
    return max(64, ENCODER_TOKENS // tokens)


@torch.inference_mode()
def encode(encoder: nn.Module, X: torch.Tensor, *, fast: bool) -> torch.Tensor:
    """Latent codes of ``X`` with ``encoder`` in eval mode: chunked (``fast``) or in one pass
    of :data:`REFERENCE_BATCH`-row batches (the reference path)."""
    encoder.eval()
    if fast:
        with scoring_threads():
            return run_chunked(encoder, X, encoder_chunk(encoder))
    return torch.cat([encoder(part) for part in X.split(REFERENCE_BATCH)])


@torch.inference_mode()
def flow_nll(flow: nn.Module, X: torch.Tensor, *, fast_flow: FastMAF | None) -> torch.Tensor:
    """Negative log-likelihood of each row of ``X``: through ``fast_flow`` (a :class:`FastMAF`
    of ``flow``) when given, else through ``flow`` itself."""
    if fast_flow is not None:
        with scoring_threads():
            return run_chunked(fast_flow, X, FLOW_CHUNK)
    return torch.cat([flow(part) for part in X.split(REFERENCE_BATCH)])
