"""The model's input, described once: :class:`FlowSpec` and its (de)serialisation.

A detector reads flow records of some format (CIC-IDS-2017 CSV, Zeek ``conn.log``, NetFlow,
packets turned into flows, any table). At training time
:func:`latent_sculpting.io.fitting.fit_spec` decides the role of every column and learns the
categorical vocabularies from the training rows; the spec is saved in the model file. Everywhere
afterwards :func:`latent_sculpting.io.encoding.encode` turns a batch of records into model inputs
with that spec, so a flow gets the same features however it arrives.

Numbers are read as float64 and must fit float32, the model's precision: a finite value beyond
float32's range is an error naming the row and column, never a silent infinity. Non-finite and
missing values become 0 (the paper's choice), counted in a
:class:`~latent_sculpting.io.cleaning.CleaningReport`. A categorical column becomes one indicator
feature per frequent training value plus one for every other value (``column=(other)``); a
missing value is the value ``(missing)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from latent_sculpting.io.context.config import ContextConfig
from latent_sculpting.io.formats import get_format

__all__ = [
    "legacy_spec",
    "model_spec",
    "OTHER",
    "Categorical",
    "FlowSpec",
    "spec_for_features",
]

OTHER = "(other)"
#: Bounds on a spec read from a model file (they keep a tampered file from asking for absurd
#: allocations); far above any real flow format.
MAX_FEATURES = 10_000
MAX_NAME_LENGTH = 512
NONFINITE_POLICIES = ("zero", "error")


@dataclass(frozen=True)
class Categorical:
    """A categorical feature column and the training values that get their own indicator."""

    column: str
    values: tuple[str, ...]

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f"{self.column}={v}" for v in self.values) + (f"{self.column}={OTHER}",)


@dataclass(frozen=True)
class FlowSpec:
    """Everything needed to turn flow records of one format into a model's inputs.

    Attributes
    ----------
    format : str
        Registered format name (:mod:`latent_sculpting.io.formats`).
    numeric : tuple of str
        Canonical names of the numeric feature columns, in feature order.
    engineered : tuple of str
        Features the format derives from numeric columns, after them.
    categorical : tuple of Categorical
        Categorical feature columns with their vocabularies, after the engineered features.
    identifiers : tuple of str
        Columns carried to the output, never features.
    label_column, benign_label : str or None
        Where labels are, and which one means benign.
    nonfinite : {"zero", "error"}
        What a non-finite or missing numeric value becomes.
    dropped : tuple of (str, str)
        Columns left out at fit time, each with the reason (for the training summary).
    context : ContextConfig or None
        The context features (:mod:`latent_sculpting.io.context`) after every per-flow
        feature, from each flow's start time and endpoints; None for none. Model files
        written before context existed have none.
    """

    format: str
    numeric: tuple[str, ...]
    engineered: tuple[str, ...] = ()
    categorical: tuple[Categorical, ...] = ()
    identifiers: tuple[str, ...] = ()
    label_column: str | None = None
    benign_label: str | None = None
    nonfinite: str = "zero"
    dropped: tuple[tuple[str, str], ...] = field(default=())
    context: ContextConfig | None = None

    @property
    def feature_names(self) -> list[str]:
        names = [*self.numeric, *self.engineered]
        for cat in self.categorical:
            names.extend(cat.feature_names)
        return names + self.context_names

    @property
    def context_names(self) -> list[str]:
        """The context features' names (the last columns), none without context."""
        return [] if self.context is None else self.context.feature_names

    @property
    def n_flow_features(self) -> int:
        """Features of a flow's own record, before the context features."""
        return (
            len(self.numeric)
            + len(self.engineered)
            + sum(len(c.values) + 1 for c in self.categorical)
        )

    @property
    def n_features(self) -> int:
        return self.n_flow_features + len(self.context_names)

    def required_columns(self) -> list[str]:
        """Canonical columns a record must have to be scored."""
        fmt = get_format(self.format)
        needed = list(self.numeric)
        if self.engineered:
            needed += [c for c in fmt.needs() if c not in needed]
        return needed + [c.column for c in self.categorical]

    def summary(self) -> str:
        """What became of each column, for ``sculpt train`` to print."""
        lines = [f"format: {self.format}"]
        lines.append(f"numeric features ({len(self.numeric)}): {', '.join(self.numeric)}")
        if self.engineered:
            lines.append(f"engineered features: {', '.join(self.engineered)}")
        for cat in self.categorical:
            shown = ", ".join(cat.values[:12]) + (" ..." if len(cat.values) > 12 else "")
            lines.append(
                f"categorical feature {cat.column!r}: {len(cat.values)} values + {OTHER} ({shown})"
            )
        if self.identifiers:
            lines.append(f"identifiers (kept, never features): {', '.join(self.identifiers)}")
        if self.label_column:
            lines.append(f"label column: {self.label_column!r} (benign: {self.benign_label!r})")
        for column, reason in self.dropped:
            lines.append(f"left out {column!r}: {reason}")
        if self.context is not None:
            scales = ", ".join(f"{w:g} s" for w in self.context.windows_s)
            lines.append(
                f"context features ({len(self.context_names)}): the recent flows of each flow's "
                f"{', '.join(self.context.entities)} at time scales {scales}"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "numeric": list(self.numeric),
            "engineered": list(self.engineered),
            "categorical": [
                {"column": c.column, "values": list(c.values)} for c in self.categorical
            ],
            "identifiers": list(self.identifiers),
            "label_column": self.label_column,
            "benign_label": self.benign_label,
            "nonfinite": self.nonfinite,
            "dropped": [list(d) for d in self.dropped],
            "context": None if self.context is None else self.context.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Any) -> FlowSpec:
        """A spec from :meth:`to_dict` output (e.g. read from a model file), fully validated.

        Raises
        ------
        ValueError
            Naming the first key that is missing, of the wrong type, or out of bounds.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"input spec must be an object, got {type(data).__name__}")
        fmt = _string(data, "format")
        get_format(fmt)
        nonfinite = _string(data, "nonfinite")
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"input spec: nonfinite must be one of {NONFINITE_POLICIES}")
        categorical = []
        raw_cats = data.get("categorical")
        if not isinstance(raw_cats, list):
            raise ValueError("input spec: 'categorical' must be a list")
        for i, entry in enumerate(raw_cats):
            if not isinstance(entry, Mapping):
                raise ValueError(f"input spec: categorical[{i}] must be an object")
            categorical.append(
                Categorical(_string(entry, "column"), tuple(_names(entry, "values")))
            )
        dropped = data.get("dropped")
        if not isinstance(dropped, list) or not all(
            isinstance(d, list) and len(d) == 2 and all(isinstance(x, str) for x in d)
            for d in dropped
        ):
            raise ValueError("input spec: 'dropped' must be a list of [column, reason] pairs")
        # Absent from files written before context features existed: no context.
        context = data.get("context")
        if context is not None:
            try:
                context = ContextConfig.from_dict(context)
            except ValueError as error:
                raise ValueError(f"input spec: {error}") from None
            if not get_format(fmt).endpoint_columns:
                raise ValueError(
                    f"input spec: context features on the {fmt} format, which has no start "
                    "time and endpoints"
                )
        spec = cls(
            format=fmt,
            numeric=tuple(_names(data, "numeric")),
            engineered=tuple(_names(data, "engineered")),
            categorical=tuple(categorical),
            identifiers=tuple(_names(data, "identifiers")),
            label_column=_string(data, "label_column", optional=True),
            benign_label=_string(data, "benign_label", optional=True),
            nonfinite=nonfinite,
            dropped=tuple((d[0], d[1]) for d in dropped),
            context=context,
        )
        names = spec.feature_names
        if not 0 < len(names) <= MAX_FEATURES:
            raise ValueError(f"input spec: {len(names)} features (1 to {MAX_FEATURES} allowed)")
        if len(set(names)) != len(names):
            raise ValueError("input spec: feature names are not unique")
        unknown = set(spec.engineered) - set(get_format(fmt).engineered)
        if unknown:
            raise ValueError(f"input spec: format {fmt!r} derives no feature {sorted(unknown)}")
        return spec


def _string(data: Mapping, key: str, *, optional: bool = False) -> Any:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"input spec: {key!r} must be a string of at most {MAX_NAME_LENGTH}")
    return value


def _names(data: Mapping, key: str) -> list[str]:
    value = data.get(key)
    if not isinstance(value, list) or len(value) > MAX_FEATURES:
        raise ValueError(f"input spec: {key!r} must be a list of at most {MAX_FEATURES} names")
    for item in value:
        if not isinstance(item, str) or not 0 < len(item) <= MAX_NAME_LENGTH:
            raise ValueError(f"input spec: {key!r} holds {item!r}, not a column name")
    return value


def spec_for_features(names: Sequence[str]) -> FlowSpec:
    """The spec of a model fitted on a plain numeric table with these column names."""
    return FlowSpec(format="table", numeric=tuple(str(n) for n in names))


def model_spec(model: Any) -> FlowSpec:
    """A fitted model's input spec: the one it was trained with, else (fitted on a plain
    DataFrame) a numeric table of its feature names.

    Raises
    ------
    ValueError
        If the model was fitted on an array, without feature names.
    """
    spec = getattr(model, "spec_", None)
    if spec is not None:
        return spec
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        raise ValueError(
            "the model was fitted without feature names (on an array), so records cannot be "
            "matched to its features; fit it on a DataFrame"
        )
    return spec_for_features(names)


def legacy_spec(names: Sequence[str], extra: Mapping[str, Any]) -> FlowSpec:
    """The spec of a model file written before specs were stored (format version 2)."""
    from latent_sculpting.io.formats.cicids2017 import (
        BENIGN,
        CANONICAL_FEATURES,
        ENGINEERED_FEATURES,
        IDENTIFIER_COLUMNS,
    )

    names = [str(n) for n in names]
    canonical = set(CANONICAL_FEATURES) | set(ENGINEERED_FEATURES)
    training = extra.get("training_data") or {}
    if set(names) <= canonical and set(names) & set(CANONICAL_FEATURES):
        numeric = tuple(n for n in names if n in set(CANONICAL_FEATURES))
        engineered = tuple(n for n in names if n in set(ENGINEERED_FEATURES))
        if list(numeric) + list(engineered) == names:
            return FlowSpec(
                format="cicids2017",
                numeric=numeric,
                engineered=engineered,
                identifiers=IDENTIFIER_COLUMNS,
                label_column="Label",
                benign_label=BENIGN,
            )
    label = training.get("label_column")
    return FlowSpec(
        format="table",
        numeric=tuple(names),
        label_column=label if isinstance(label, str) else None,
        benign_label=training.get("benign_label") if isinstance(label, str) else None,
    )
