"""Resolve a SenML pack (RFC 8428, CBOR labels) into readings.

This is the gateway's reference decoder: it accepts everything RFC 8428 allows
in CBOR (base name/time/unit/value/sum, relative and absolute times, string,
boolean and data values). Numeric readings feed the aggregates; the others are
uplinked as they are.
"""
from __future__ import annotations

import math
import time
from typing import NamedTuple

import cbor2

from ..errors import PayloadError
from .numbers import (
    SENML_BN, SENML_BS, SENML_BT, SENML_BU, SENML_BV, SENML_BVER, SENML_N, SENML_RELATIVE_TIME_LIMIT,
    SENML_S, SENML_T, SENML_U, SENML_UT, SENML_V, SENML_VB, SENML_VD, SENML_VS,
)

_VALUE_KEYS = (SENML_V, SENML_VS, SENML_VB, SENML_VD, SENML_S)
_KNOWN = {SENML_BN, SENML_BT, SENML_BU, SENML_BV, SENML_BS, SENML_BVER, SENML_N, SENML_U, SENML_V,
          SENML_VS, SENML_VB, SENML_S, SENML_T, SENML_UT, SENML_VD}
MAX_RECORDS = 512


class Reading(NamedTuple):
    """One resolved SenML record. `value` is float for numeric, else str/bool/bytes."""

    name: str  # full series name, base name included, e.g. "pump3/temp"
    time: float  # seconds since the Unix epoch
    value: object
    unit: str | None = None


def _number(value, what: str, index: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PayloadError(f"record {index}: {what} must be a number, got {type(value).__name__}")
    return float(value)


def decode_pack(payload: bytes, now: float | None = None) -> list[Reading]:
    """Decode and resolve a SenML-CBOR pack; raise PayloadError naming the record at fault."""
    try:
        pack = cbor2.loads(payload)
    except Exception as exc:
        raise PayloadError(f"payload is not CBOR: {exc}") from None
    if not isinstance(pack, (list, tuple)) or not pack:
        raise PayloadError("SenML pack must be a non-empty array of records")
    if len(pack) > MAX_RECORDS:
        raise PayloadError(f"SenML pack of {len(pack)} records exceeds {MAX_RECORDS}")
    bn, bt, bu, bv, bs = "", 0.0, None, None, None
    out: list[Reading] = []
    for i, rec in enumerate(pack):
        if not hasattr(rec, "get"):
            raise PayloadError(f"record {i} is not a map")
        unknown = [k for k in rec if k not in _KNOWN]
        if any(isinstance(k, str) and k.endswith("_") for k in unknown):
            raise PayloadError(f"record {i} has a must-understand field {unknown!r}")
        if SENML_BN in rec:
            bn = rec[SENML_BN]
            if not isinstance(bn, str):
                raise PayloadError(f"record {i}: bn must be text")
        if SENML_BT in rec:
            bt = _number(rec[SENML_BT], "bt", i)
        if SENML_BU in rec:
            bu = rec[SENML_BU]
        if SENML_BV in rec:
            bv = _number(rec[SENML_BV], "bv", i)
        if SENML_BS in rec:
            bs = _number(rec[SENML_BS], "bs", i)
        present = [k for k in _VALUE_KEYS if k in rec]
        if not present:
            if bv is None and bs is None:
                if SENML_N in rec or SENML_T in rec:
                    raise PayloadError(f"record {i} has no value")
                continue  # a record of base fields only
        if len(present) > 1 and present != [SENML_V, SENML_S]:
            raise PayloadError(f"record {i} has several values {present}")
        name = rec.get(SENML_N, "")
        if not isinstance(name, str):
            raise PayloadError(f"record {i}: n must be text")
        full = bn + name
        if not full or not _valid_name(full):
            raise PayloadError(f"record {i}: invalid name {full!r}")
        t = bt + (_number(rec[SENML_T], "t", i) if SENML_T in rec else 0.0)
        if not math.isfinite(t):
            raise PayloadError(f"record {i}: time is not finite")
        if t < SENML_RELATIVE_TIME_LIMIT:
            t += time.time() if now is None else now
        unit = rec.get(SENML_U, bu)
        if SENML_V in rec or (not present and bv is not None):
            value = (bv or 0.0) + (_number(rec[SENML_V], "v", i) if SENML_V in rec else 0.0)
        elif SENML_S in rec or (not present and bs is not None):
            value = (bs or 0.0) + (_number(rec[SENML_S], "s", i) if SENML_S in rec else 0.0)
        elif SENML_VS in rec:
            value = rec[SENML_VS]
            if not isinstance(value, str):
                raise PayloadError(f"record {i}: vs must be text")
        elif SENML_VB in rec:
            value = rec[SENML_VB]
            if not isinstance(value, bool):
                raise PayloadError(f"record {i}: vb must be a boolean")
        else:
            value = rec[SENML_VD]
            if not isinstance(value, bytes):
                raise PayloadError(f"record {i}: vd must be a byte string")
        out.append(Reading(full, t, value, unit))
    if not out:
        raise PayloadError("SenML pack holds no reading")
    return out


def _valid_name(name: str) -> bool:
    # RFC 8428 §4.5.1: starts with a letter or digit; then letters, digits, - : . / _
    if len(name) > 128 or not name[0].isalnum():
        return False
    return all(c.isalnum() or c in "-:./_" for c in name) and name.isascii()
