"""Flood levels as the command line writes them: numbers, comma lists and ranges start:stop:step."""

from __future__ import annotations

import math

from landscape.errors import BadInput, require


def parse_flood_levels(tokens: list[str] | tuple[str, ...]) -> tuple[float, ...]:
    """Flood levels from CLI tokens: numbers, comma lists, or inclusive ranges start:stop:step.
    A level given twice is bad input: the sweep would name one run twice (or, de-duplicated,
    train fewer runs than asked without saying so)."""
    levels: list[float] = []
    for token in tokens:
        for part in str(token).split(","):
            part = part.strip()
            if not part:
                continue
            if ":" in part:
                levels.extend(_parse_range(part))
            else:
                levels.append(_parse_number(part, token))
    require(bool(levels), "no flood level given: --flood needs a number, a list or start:stop:step")
    bad = [b for b in levels if not (math.isfinite(b) and b >= 0)]
    if bad:  # not _check: the message indexes bad[0]
        raise BadInput(f"flood levels must be finite and >= 0, got {bad[0]:g}")
    # Levels equal as numbers (0.1 and 0.10, or 0.1 in a list and in a range) are one run.
    seen: set[float] = set()
    for b in levels:
        if b in seen:
            raise BadInput(f"flood level {b:g} is given twice in "
                           f"{' '.join(map(str, tokens))!r}; give each level once")
        seen.add(b)
    return tuple(levels)


def _parse_number(text: str, token: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise BadInput(f"malformed flood level {token!r}: expected a number, a comma list or "
                       "start:stop:step") from None


def _parse_range(text: str) -> list[float]:
    pieces = text.split(":")
    require(len(pieces) == 3, f"malformed flood range {text!r}: expected start:stop:step")
    start, stop, step = (_parse_number(p, text) for p in pieces)
    require(all(map(math.isfinite, (start, stop, step))),
            f"malformed flood range {text!r}: start, stop and step must be finite")
    require(step > 0, f"malformed flood range {text!r}: step must be > 0")
    require(start <= stop, f"empty flood range {text!r}: start is above stop")
    span = (stop - start) / step  # may overflow to inf (0:1e300:1e-300): too many either way
    require(span < 100_000, f"flood range {text!r} has too many levels ({span + 1:.3g}; at most "
                            "100,000)")
    count = int(math.floor(span + 1e-9)) + 1
    # Rounded so that 0:0.5:0.01 gives 0.07, not 0.07000000000000001 (it names files).
    return [round(start + i * step, 10) for i in range(count)]


BASELINE = 0.0  # b = 0 is training without flooding
