"""Are the contenders' decisions the same? (pure; B6 fails when they are not)

Each decision record is reduced to a canonical text: its key, and the decoded decision (hash
verified against its content on decoding) without `emitted_at`, the one field that is the
producing process's clock. The contenders are equal when their multisets of canonical texts are
equal: the same decisions, each as many times, under the same keys.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.codecs import decode_decision

CLOCK_FIELDS = frozenset({"emitted_at"})


def canonical(key: bytes | None, value: bytes | None) -> str:
    """One decision record as canonical text; `DecodeError` when the hash does not match."""
    decision = decode_decision(value, verify_hash=True)
    body = decision.model_dump(mode="json", exclude=set(CLOCK_FIELDS))
    return json.dumps(
        {"key": None if key is None else key.decode(), "decision": body},
        sort_keys=True,
        separators=(",", ":"),
    )


def digest(items: Counter[str]) -> str:
    """sha256 over the sorted canonical texts (with their multiplicity)."""
    h = hashlib.sha256()
    for text in sorted(items.elements()):
        h.update(text.encode())
        h.update(b"\n")
    return h.hexdigest()


@dataclass(frozen=True)
class Difference:
    missing: int  # in the reference, not (as often) in this contender
    extra: int  # in this contender, not (as often) in the reference


@dataclass(frozen=True)
class Comparison:
    reference: str
    counts: dict[str, int]
    digests: dict[str, str]
    differences: dict[str, Difference] = field(default_factory=dict)

    @property
    def equal(self) -> bool:
        return not self.differences

    def as_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "equal": self.equal,
            "decisions": self.counts,
            "digests": self.digests,
            "differences": {
                name: {"missing": d.missing, "extra": d.extra}
                for name, d in self.differences.items()
            },
        }

    def describe(self) -> str:
        parts = [
            f"{name}: {d.missing} missing, {d.extra} extra vs {self.reference}"
            for name, d in self.differences.items()
        ]
        return "; ".join(parts) or "equal"


def compare(reference: str, outputs: Mapping[str, Iterable[str]]) -> Comparison:
    """Every contender's canonical decisions against the reference contender's."""
    if reference not in outputs:
        raise ValueError(f"reference {reference!r} is not among {sorted(outputs)}")
    multisets = {name: Counter(items) for name, items in outputs.items()}
    base = multisets[reference]
    differences: dict[str, Difference] = {}
    for name, items in multisets.items():
        if name == reference:
            continue
        missing = sum((base - items).values())
        extra = sum((items - base).values())
        if missing or extra:
            differences[name] = Difference(missing, extra)
    return Comparison(
        reference,
        {name: sum(items.values()) for name, items in multisets.items()},
        {name: digest(items) for name, items in multisets.items()},
        differences,
    )
