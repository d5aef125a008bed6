"""The folds of the zero-day benchmark and the rows each one fits, calibrates and tests on.

A :class:`Fold` withholds some attack classes: they are the zero-day attacks it tests, and they
and their campaign siblings are kept out of every fit. :func:`test_folds` gives a dataset's
test folds (each family in turn, and for CIC-IDS-2017 the paper's four classes);
:func:`validation_folds` gives, inside one test fold's training rows, a fold per known family
held out as a pseudo-zero-day, for choosing designs without touching any test row.
:func:`split_fold` draws the rows of a fold for one split seed; :func:`check_fold` refuses a
fold whose roles overlap, whose fitting rows hold a withheld or sibling class, or whose
evaluation rows copy a fitting row (see ``docs/research/protocol.md``).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from latent_sculpting.research.benchmark.datasets import Dataset

__all__ = [
    "PROTOCOLS",
    "Fold",
    "FoldRows",
    "LeakError",
    "check_fold",
    "drop_duplicates",
    "duplicates_of",
    "split_fold",
    "test_folds",
    "validation_folds",
]

#: Test protocols: every family withheld in turn, and the paper's four CIC-IDS-2017 classes.
PROTOCOLS = ("families", "paper")

#: Shares of the benign rows for the benign test rows and for the held-out calibration rows
#: that set every threshold; the rest is fitted on.
BENIGN_TEST_FRACTION = 0.2
CALIBRATION_FRACTION = 0.2
#: Share of each known attack class held out as the known-attack test.
KNOWN_TEST_FRACTION = 0.2


class LeakError(RuntimeError):
    """A fold would fit on, or evaluate with, rows it must not."""


@dataclass(frozen=True)
class Fold:
    """One zero-day experiment on one dataset.

    Attributes
    ----------
    dataset : str
    name : str
        ``"PortScan"``, ``"paper"``, or ``"Bot > DDoS"`` (validation fold DDoS inside test
        fold Bot).
    kind : {"family", "paper", "validation"}
    withheld : tuple of str
        Classes tested as zero-day attacks.
    excluded : tuple of str
        Classes kept out of fitting: the withheld ones, their campaign siblings and (validation
        folds) everything the outer fold keeps out.
    outer : Fold or None
        The test fold a validation fold lies in: it only uses that fold's fitting rows.
    """

    dataset: str
    name: str
    kind: str
    withheld: tuple[str, ...]
    excluded: tuple[str, ...]
    outer: Fold | None = None

    @property
    def siblings(self) -> tuple[str, ...]:
        """Classes kept out of fitting but not tested here."""
        return tuple(c for c in self.excluded if c not in self.withheld)


def _excluded(dataset: Dataset, withheld: Iterable[str], also: Iterable[str] = ()) -> tuple:
    withheld = tuple(withheld)
    out = [*withheld, *(c for c in also if c not in withheld)]
    for campaign in dataset.adapter.campaigns:
        if set(campaign) & set(withheld):
            out += [c for c in campaign if c not in out]
    return tuple(out)


def test_folds(
    dataset: Dataset,
    protocols: Sequence[str] = PROTOCOLS,
    *,
    families: Sequence[str] | None = None,
    withheld: Sequence[str] | None = None,
    min_rows: int = 10,
) -> tuple[list[Fold], dict[str, str]]:
    """The test folds of a dataset.

    Parameters
    ----------
    dataset : Dataset
    protocols : sequence of {"families", "paper"}
        ``"families"``: each attack family withheld in turn; ``"paper"``: the classes of the
        paper's protocol (CIC-IDS-2017 only; skipped for other datasets).
    families : sequence of str, optional
        Only these families.
    withheld : sequence of str, optional
        The classes of the ``"paper"`` fold (default the paper's four).
    min_rows : int, default 10
        A family with fewer rows is skipped: its recall would move in steps of over 10 %.

    Returns
    -------
    folds : list of Fold
    skipped : dict of str to str
        Family -> why it has no fold.
    """
    unknown = sorted(set(protocols) - set(PROTOCOLS))
    if unknown:
        raise ValueError(f"unknown protocol(s) {unknown}; choose from {PROTOCOLS}")
    present = set(dataset.classes)
    family_map = dataset.family_map()
    folds: list[Fold] = []
    skipped: dict[str, str] = {}
    if "families" in protocols:
        wanted = list(family_map) if families is None else list(families)
        declared = set(dataset.adapter.families) | set(family_map)
        bad = [f for f in wanted if f not in declared]
        if bad:
            raise ValueError(
                f"{dataset.name} has no family {bad}; its families: {', '.join(family_map)}"
            )
        for name in wanted:
            classes = family_map.get(name, ())
            rows = int(np.isin(dataset.classes, classes).sum())
            if not classes:
                skipped[name] = "no class of the family in the data"
            elif rows < min_rows:
                skipped[name] = f"{rows} row(s), fewer than {min_rows}"
            else:
                folds.append(
                    Fold(dataset.name, name, "family", classes, _excluded(dataset, classes))
                )
    if "paper" in protocols:
        paper = getattr(dataset.adapter, "paper", None)
        classes = tuple(withheld) if withheld else paper
        if classes is None:
            skipped["paper"] = (
                f"the paper's protocol is defined on CIC-IDS-2017, not {dataset.name}"
            )
        else:
            absent = [c for c in classes if c not in present]
            if absent:
                raise ValueError(
                    f"withheld class(es) {absent} not in {dataset.name}; classes present: "
                    f"{sorted(present)}"
                )
            folds.append(Fold(dataset.name, "paper", "paper", classes, _excluded(dataset, classes)))
    return folds, skipped


def validation_folds(dataset: Dataset, outer: Fold, *, min_rows: int = 10) -> list[Fold]:
    """Folds for choosing a design inside a test fold: each family whose classes the test fold
    trains on, held out in turn as a pseudo-zero-day.

    A validation fold draws every row from the test fold's fitting rows (see
    :func:`split_fold`), so neither the test fold's withheld family nor its benign test and
    calibration rows are seen by any choice made on it.
    """
    if outer.kind == "validation":
        raise ValueError("a validation fold lies in a test fold, not in another validation fold")
    folds = []
    for name, classes in dataset.family_map().items():
        known = tuple(c for c in classes if c not in outer.excluded)
        if not known or int(np.isin(dataset.classes, known).sum()) < min_rows:
            continue
        folds.append(
            Fold(
                dataset.name,
                f"{outer.name} > {name}",
                "validation",
                known,
                _excluded(dataset, known, also=outer.excluded),
                outer=outer,
            )
        )
    return folds


@dataclass
class FoldRows:
    """Row indices (into the dataset) of each role of one fold for one split seed.

    Attributes
    ----------
    fit : ndarray of int64
        Benign rows and known attacks every method is fitted on.
    calibration : ndarray of int64
        Benign rows held out of every fit; they alone set the thresholds.
    test_benign, test_attack : ndarray of int64
        Benign test rows and the withheld classes' rows.
    known_test : ndarray of int64
        Held-out rows of the known attack classes.
    quarantined : ndarray of int64
        Campaign siblings: neither fitted on nor tested.
    duplicates : dict of str to int
        Rows removed from each evaluation role because their features equal a fitting row's.
    """

    fit: np.ndarray
    calibration: np.ndarray
    test_benign: np.ndarray
    test_attack: np.ndarray
    known_test: np.ndarray
    quarantined: np.ndarray
    duplicates: dict[str, int] = field(default_factory=dict)

    ROLES = ("fit", "calibration", "test_benign", "test_attack", "known_test")

    def used(self) -> np.ndarray:
        """Every row some role uses, sorted."""
        return np.unique(np.concatenate([getattr(self, r) for r in self.ROLES]))

    def counts(self) -> dict[str, int]:
        return {r: len(getattr(self, r)) for r in (*self.ROLES, "quarantined")}


def _rng(seed: int, *salt: str) -> np.random.Generator:
    # A stable salt (not Python's randomised hash) keeps each draw the same across processes.
    return np.random.default_rng([seed, *(zlib.crc32(s.encode()) for s in salt)])


def split_fold(dataset: Dataset, fold: Fold, seed: int) -> FoldRows:
    """Draw the rows of each role of ``fold`` for split seed ``seed``.

    Benign rows are split 60/20/20 into fitting, calibration and test rows; each known attack
    class 80/20 into fitting and known-test rows; the withheld classes are all test rows; the
    campaign siblings are quarantined. A validation fold draws only from its test fold's
    fitting rows (drawn with the same seed). Duplicates are removed later, on the fold's
    features (:func:`duplicates_of`).

    Raises
    ------
    ValueError
        If the fold has fewer than 30 benign rows to split, or no known attack to fit on.
    """
    if fold.dataset != dataset.name:
        raise ValueError(f"fold {fold.name!r} is of {fold.dataset}, not {dataset.name}")
    if fold.outer is not None:
        pool = split_fold(dataset, fold.outer, seed).fit
        salt = ("validation", fold.name)
    else:
        pool = np.arange(len(dataset), dtype=np.int64)
        salt = ()
    classes = dataset.classes[pool]
    benign = pool[classes == dataset.benign]
    if len(benign) < 30:
        raise ValueError(
            f"{dataset.name}, fold {fold.name!r}: {len(benign)} benign rows; need at least 30"
        )
    benign = benign[_rng(seed, *salt, "benign").permutation(len(benign))]
    n_test = int(round(BENIGN_TEST_FRACTION * len(benign)))
    n_cal = int(round(CALIBRATION_FRACTION * len(benign)))
    test_benign, calibration = benign[:n_test], benign[n_test : n_test + n_cal]
    fit = [benign[n_test + n_cal :]]
    known_test = []
    excluded = set(fold.excluded)
    for name in sorted(set(classes) - {dataset.benign} - excluded):
        rows = pool[classes == name]
        rows = rows[_rng(seed, *salt, "class", name).permutation(len(rows))]
        n_held = int(round(KNOWN_TEST_FRACTION * len(rows))) if len(rows) >= 2 else 0
        known_test.append(rows[:n_held])
        fit.append(rows[n_held:])
    if len(fit) == 1:
        raise ValueError(f"{dataset.name}, fold {fold.name!r}: no known attack class to fit on")
    in_pool = np.isin(classes, fold.withheld)
    quarantined = np.isin(classes, [c for c in fold.excluded if c not in fold.withheld])

    def ordered(parts: list[np.ndarray] | np.ndarray) -> np.ndarray:
        rows = np.concatenate(parts) if isinstance(parts, list) else parts
        return np.sort(rows.astype(np.int64))

    return FoldRows(
        fit=ordered(fit),
        calibration=ordered(calibration),
        test_benign=ordered(test_benign),
        test_attack=ordered(pool[in_pool]),
        known_test=ordered(known_test) if known_test else np.empty(0, np.int64),
        quarantined=ordered(pool[quarantined]),
    )


def _row_keys(X: np.ndarray) -> np.ndarray:
    """One bytes key per row of ``X`` (``-0.0`` and ``0.0`` alike)."""
    X = np.ascontiguousarray(np.asarray(X, dtype=np.float32) + np.float32(0.0))
    return X.view(np.dtype((np.void, X.dtype.itemsize * X.shape[1]))).ravel()


def duplicates_of(reference: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Which rows of ``X`` equal some row of ``reference`` exactly (boolean mask)."""
    if len(X) == 0 or len(reference) == 0:
        return np.zeros(len(X), bool)
    return np.isin(_row_keys(X), _row_keys(reference))


def drop_duplicates(rows: FoldRows, dataset: Dataset, used: np.ndarray, X: np.ndarray) -> FoldRows:
    """``rows`` less every evaluation row whose features equal a fitting row's, counted.

    ``duplicates["test_attack_as_benign"]`` counts the withheld attacks removed because they
    equal a *benign* fitting row: no method could tell them from benign traffic on these
    features.

    Parameters
    ----------
    rows : FoldRows
    dataset : Dataset
    used : ndarray of int64
        Sorted dataset rows whose features ``X`` holds (:meth:`FoldRows.used`).
    X : ndarray
        Their features, encoded with the fold's spec (what the methods see).
    """
    fit_X = X[np.searchsorted(used, rows.fit)]
    out, counts = {}, {}
    for role in FoldRows.ROLES[1:]:
        index = getattr(rows, role)
        role_X = X[np.searchsorted(used, index)]
        dup = duplicates_of(fit_X, role_X)
        out[role] = index[~dup]
        counts[role] = int(dup.sum())
        if role == "test_attack":
            benign_X = fit_X[dataset.classes[rows.fit] == dataset.benign]
            counts["test_attack_as_benign"] = int(duplicates_of(benign_X, role_X).sum())
    return replace(rows, **out, duplicates=counts)


def check_fold(
    rows: FoldRows,
    dataset: Dataset,
    fold: Fold,
    used: np.ndarray | None = None,
    X: np.ndarray | None = None,
) -> None:
    """Refuse a fold that would leak.

    Raises
    ------
    LeakError
        If two roles share a row, a fitting row's class is withheld or a campaign sibling, a
        test attack is not of a withheld class, a calibration or benign test row is not benign,
        or (given the features of the ``used`` rows) an evaluation row equals a fitting row.
    """
    where = f"{dataset.name}, fold {fold.name!r}"
    roles = {r: set(getattr(rows, r).tolist()) for r in (*FoldRows.ROLES, "quarantined")}
    names = list(roles)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = roles[a] & roles[b]
            if shared:
                raise LeakError(f"{where}: {len(shared)} row(s) are both {a} and {b} rows")
    fitted = set(dataset.classes[rows.fit].tolist())
    leaked = sorted(fitted & set(fold.excluded))
    if leaked:
        raise LeakError(f"{where}: the fitting rows hold withheld or sibling class(es) {leaked}")
    tested = set(dataset.classes[rows.test_attack].tolist())
    if not tested <= set(fold.withheld):
        raise LeakError(f"{where}: test attacks of classes {sorted(tested - set(fold.withheld))}")
    for role in ("calibration", "test_benign"):
        kinds = set(dataset.classes[getattr(rows, role)].tolist()) - {dataset.benign}
        if kinds:
            raise LeakError(f"{where}: {role} rows of classes {sorted(kinds)}")
    if X is not None and used is not None:
        fit_X = X[np.searchsorted(used, rows.fit)]
        for role in FoldRows.ROLES[1:]:
            if duplicates_of(fit_X, X[np.searchsorted(used, getattr(rows, role))]).any():
                raise LeakError(f"{where}: {role} rows copy fitting rows exactly")
