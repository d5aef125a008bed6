"""How often benign hosts raise incidents: the calibration of an incident's score.

An incident's score sums the evidence of its flagged flows, but the flows of one host are not
independent (a chatty benign host that trips the detector once tends to trip it again within
minutes), so the score cannot be read as a probability. It is calibrated empirically instead:
benign traffic held out from training (its own files: a later day, other hosts) is scored by
the model and grouped exactly as live traffic is; each benign source host's activity is cut
into windows of ``window_s`` seconds, and the benign *host-days* are the windows in which the
host sent any flow, each counted for the part of it that its capture covers (from the file's
first flow to its last: a 20-minute capture is 20 minutes of each host, not an hour), over
86,400 s. Every incident these benign hosts raise is a
false incident; :meth:`IncidentCalibration.rate` is the number of them scoring at least a given
score, per benign host-day, and :meth:`IncidentCalibration.threshold` the lowest score whose
rate is at most a target (``--target-incidents``).

The calibration is a small JSON file beside the model (:func:`calibration_path`), not a part of
the model file: it depends on the grouping settings as much as on the model, is computed from
other files than the training data (it needs their start times and addresses, which the model
never sees), and must be redone after ``sculpt adapt`` moves the flow threshold; a fingerprint
of the model's threshold and calibration scores ties it to one model, checked on load.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latent_sculpting.monitor.incidents import IncidentConfig

__all__ = [
    "CALIBRATION_SUFFIX",
    "CALIBRATION_VERSION",
    "HostTime",
    "IncidentCalibration",
    "calibration_path",
    "load_calibration",
    "model_fingerprint",
    "save_calibration",
]

CALIBRATION_VERSION = 1
#: Appended to the model file's name for its default calibration file.
CALIBRATION_SUFFIX = ".incidents.json"
#: Bound on the benign incident scores a file may hold (a file is untrusted data).
MAX_SCORES = 10_000_000
_KIND = "latent-sculpting incident calibration"


@dataclass(frozen=True)
class IncidentCalibration:
    """False incidents of benign hosts, by score.

    Attributes
    ----------
    grouping : dict
        :meth:`IncidentConfig.grouping` of the run that measured it.
    model : str
        :func:`model_fingerprint` of the model that scored the benign flows.
    scores : tuple of float
        Scores of the benign hosts' incidents, ascending.
    host_days : float
        Benign host-days observed (module docstring).
    hosts, windows : int
        Benign source hosts, and their active windows.
    window_s : float
    flows : int
        Benign flows scored; ``flagged`` of them flagged.
    flagged : int
    excluded : dict of str to int
        What was left out: ``attack_flows``/``unlabelled_flows`` (rows labelled so),
        ``attack_hosts`` (sources with any attack-labelled flow: all their flows).
    sources : list of str
        The files measured.
    """

    grouping: dict[str, Any]
    model: str
    scores: tuple[float, ...]
    host_days: float
    hosts: int
    windows: int
    window_s: float
    flows: int
    flagged: int
    excluded: dict[str, int]
    sources: list[str]

    def rate(self, score: float) -> float:
        """False incidents per benign host-day scoring at least ``score``."""
        n = len(self.scores) - int(np.searchsorted(self.scores, score, side="left"))
        return n / self.host_days

    def threshold(self, target: float) -> float:
        """The lowest incident score whose :meth:`rate` is at most ``target`` (0.0 when every
        benign incident fits within the target). A target below ``1 / host_days`` cannot be
        resolved: the answer is then just above every benign incident's score."""
        if isinstance(target, bool) or not isinstance(target, int | float) or target < 0:
            raise ValueError(f"target must be a number >= 0, got {target!r}")
        allowed = math.floor(target * self.host_days + 1e-9)
        n = len(self.scores)
        if allowed >= n:
            return 0.0
        return float(np.nextafter(self.scores[n - allowed - 1], math.inf))

    @property
    def resolution(self) -> float:
        """The smallest nonzero rate this calibration can tell: one incident in all its
        host-days."""
        return 1.0 / self.host_days

    def check_grouping(self, config: IncidentConfig) -> None:
        """Raise ValueError when ``config`` groups otherwise than the calibration run did."""
        if config.grouping() != self.grouping:
            raise ValueError(
                f"the incident calibration was measured with grouping {self.grouping}, not "
                f"{config.grouping()}: group as it did, or calibrate again"
            )

    def check_model(self, model: Any, where: str = "the incident calibration") -> None:
        """Raise ValueError when the calibration was measured with another model (or before
        ``sculpt adapt`` moved its threshold)."""
        if model_fingerprint(model) != self.model:
            raise ValueError(
                f"{where} was measured with another model (or before the model was adapted): "
                "calibrate it again with this model"
            )

    def summary(self) -> str:
        """One line for people."""
        return (
            f"{len(self.scores):,} false incidents of {self.hosts:,} benign hosts over "
            f"{self.host_days:,.2f} host-days (windows of {self.window_s:g} s): "
            f"{len(self.scores) / self.host_days:,.3g} per host-day before any threshold; "
            f"rates below {self.resolution:.3g} per host-day cannot be resolved"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": _KIND,
            "version": CALIBRATION_VERSION,
            "grouping": dict(self.grouping),
            "model": self.model,
            "scores": list(self.scores),
            "host_days": self.host_days,
            "hosts": self.hosts,
            "windows": self.windows,
            "window_s": self.window_s,
            "flows": self.flows,
            "flagged": self.flagged,
            "excluded": dict(self.excluded),
            "sources": list(self.sources),
        }

    @classmethod
    def from_dict(cls, data: Any) -> IncidentCalibration:
        """Check and build (every key, type and bound; a file is untrusted data).

        Raises
        ------
        ValueError
            Naming the first key that is missing, unknown or wrong.
        """
        if not isinstance(data, dict) or data.get("kind") != _KIND:
            raise ValueError("not an incident calibration (no 'kind': " + repr(_KIND) + ")")
        if data.get("version") != CALIBRATION_VERSION:
            raise ValueError(
                f"calibration version {data.get('version')!r}; this package reads "
                f"{CALIBRATION_VERSION}"
            )
        keys = set(cls.__dataclass_fields__) | {"kind", "version"}
        unknown, missing = sorted(set(data) - keys), sorted(keys - set(data))
        if unknown or missing:
            raise ValueError(f"keys missing {missing}, unknown {unknown[:10]}")
        grouping = data["grouping"]
        if not isinstance(grouping, dict):
            raise ValueError("grouping must be an object")
        try:
            config = IncidentConfig(**grouping)
        except (TypeError, ValueError) as error:
            raise ValueError(f"grouping: {error}") from None
        if config.grouping() != grouping:
            raise ValueError(f"grouping {grouping} is not one IncidentConfig writes")
        scores = data["scores"]
        if not isinstance(scores, list) or len(scores) > MAX_SCORES:
            raise ValueError(f"scores must be a list of at most {MAX_SCORES:,} numbers")
        if not all(_number(s) for s in scores):
            raise ValueError("scores must be finite numbers")
        values = np.asarray(scores, dtype=np.float64)
        if len(values) and ((values[1:] < values[:-1]).any() or values[0] < 0):
            raise ValueError("scores must be ascending and >= 0")
        for key in ("host_days", "window_s"):
            if not _number(data[key]) or data[key] <= 0:
                raise ValueError(f"{key} must be a positive number, got {data[key]!r}")
        for key in ("hosts", "windows", "flows", "flagged"):
            if not isinstance(data[key], int) or isinstance(data[key], bool) or data[key] < 0:
                raise ValueError(f"{key} must be a count, got {data[key]!r}")
        if not isinstance(data["model"], str) or len(data["model"]) != 64:
            raise ValueError("model must be a 64-character fingerprint")
        excluded = data["excluded"]
        if not isinstance(excluded, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            for k, v in excluded.items()
        ):
            raise ValueError("excluded must map names to counts")
        sources = data["sources"]
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise ValueError("sources must be a list of file names")
        return cls(
            grouping=grouping,
            model=data["model"],
            scores=tuple(float(s) for s in values),
            host_days=float(data["host_days"]),
            hosts=data["hosts"],
            windows=data["windows"],
            window_s=float(data["window_s"]),
            flows=data["flows"],
            flagged=data["flagged"],
            excluded=excluded,
            sources=sources,
        )


def model_fingerprint(model: Any) -> str:
    """SHA-256 of the model's flow threshold, calibration scores and feature count: what
    decides which flows are flagged and their p-values (``sculpt adapt`` changes it)."""
    digest = hashlib.sha256()
    digest.update(np.float64(model.threshold_).tobytes())
    digest.update(np.asarray(model.calibration_scores_, dtype=np.float64).tobytes())
    digest.update(str(int(model.n_features_in_)).encode())
    return digest.hexdigest()


def calibration_path(model_path: str | Path) -> Path:
    """The default calibration file of a model file: ``<model>.incidents.json``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + CALIBRATION_SUFFIX)


def save_calibration(calibration: IncidentCalibration, path: str | Path) -> Path:
    """Write the calibration as JSON (temporary file, then rename)."""
    from latent_sculpting.atomic import write_json

    return write_json(calibration.to_dict(), path)


def load_calibration(path: str | Path, model: Any = None) -> IncidentCalibration:
    """Read and check a calibration file; with ``model``, check that it was measured with it.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        If it is not a valid calibration (the file and the problem named), or belongs to
        another model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"incident calibration not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        calibration = IncidentCalibration.from_dict(data)
    except (ValueError, RecursionError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: damaged incident calibration: {error}") from None
    if model is not None:
        calibration.check_model(model, where=str(path))
    return calibration


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class HostTime:
    """Benign host-time: per (host, window of ``window_s`` seconds) in which the host sent a
    flow, the seconds of that window its capture covers (from the capture's first flow to its
    last), so that a 20-minute capture counts 20 minutes of each host, not a whole window.
    The same host-window seen in several captures counts at most ``window_s``.

    A capture's flows are given in batches (:meth:`add_flows`, only their host-windows are
    kept) and the capture is closed with its span (:meth:`end_capture`);
    :meth:`add_capture` does both for flows at hand.

    >>> time = HostTime(3600.0)
    >>> time.add_capture(["a", "a", "b"], [0.0, 600.0, 1200.0])
    >>> time.windows(), round(time.seconds(), 1)
    (2, 2400.0)
    """

    def __init__(self, window_s: float) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be positive, got {window_s!r}")
        self.window_s = float(window_s)
        self._covered: dict[tuple[str, int], float] = {}
        # The capture being read: its host-windows and the span of the flows given so far.
        self._active: set[tuple[str, int]] = set()
        self._span = (math.inf, -math.inf)

    def add_flows(self, sources: Any, times: Any) -> None:
        """Flows of the current capture: their source hosts and start times (epoch seconds;
        NaN times are left out)."""
        times = np.asarray(times, dtype=np.float64)
        finite = np.isfinite(times)
        if not finite.any():
            return
        self._span = (
            min(self._span[0], float(times[finite].min())),
            max(self._span[1], float(times[finite].max())),
        )
        index = np.floor(times / self.window_s)
        for source, window in zip(list(sources), index.tolist(), strict=True):
            if math.isfinite(window):
                self._active.add((source, int(window)))

    def end_capture(self, span: tuple[float, float] | None = None) -> None:
        """Count the current capture's host-windows, each for its overlap with ``span`` (the
        capture's first and last flow time; default: those of the flows given)."""
        lo, hi = self._span if span is None else span
        for source, window in self._active:
            start = window * self.window_s
            seen = max(0.0, min(start + self.window_s, hi) - max(start, lo))
            key = (source, window)
            self._covered[key] = min(self.window_s, self._covered.get(key, 0.0) + seen)
        self._active, self._span = set(), (math.inf, -math.inf)

    def add_capture(
        self, sources: Any, times: Any, span: tuple[float, float] | None = None
    ) -> None:
        """The flows of one capture at once (:meth:`add_flows` then :meth:`end_capture`)."""
        self.add_flows(sources, times)
        self.end_capture(span)

    def hosts(self) -> set:
        """Every host seen."""
        return {source for source, _ in self._covered}

    def windows(self, exclude: set | frozenset = frozenset()) -> int:
        """Host-windows of the hosts not in ``exclude``."""
        return sum(1 for source, _ in self._covered if source not in exclude)

    def seconds(self, exclude: set | frozenset = frozenset()) -> float:
        """Seconds covered of the hosts not in ``exclude``."""
        return float(sum(v for (source, _), v in self._covered.items() if source not in exclude))
