"""Keys of the dispatch LP's columns and rows, for a warm start across plans
(:class:`megastation.dispatch.highs.WarmStart`).

A key is an int64 made of a family (a flow block, the session pairs, a constraint
family: 6 bits), an entity (a session, by CRC-32 of its id: 32 bits) and the end of the
step it belongs to (minutes since the epoch, 25 bits). Step *ends* are used because a
plan made later in the same 15-minute step has a shorter first step with the same end:
its columns get the keys of the last plan's. Two things with one key only make the
start worse, never the result.

Rows are keyed by the order in which :class:`megastation.dispatch.lp._Rows` families were
added and their length: a family with one row per step (or per step after the first)
is keyed by step, one row per session by session, one per chatter pair by pair; any
other length by position.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

TIME_BITS = 25  # the low bits of a key: its step's end (WarmStart looks up later steps)
_E_BITS = 32
_F_SHIFT = TIME_BITS + _E_BITS
_F_MAX = 63
# column families after the per-step blocks (which take 1 .. len(blocks))
_PEAK, _PAIR, _CHAT, _U1, _U2, _SHORT = 50, 51, 52, 53, 54, 55
_UB_FAMILY0 = 24  # row families: equalities from 0, inequalities from here


def _key(family: np.ndarray | int, entity: np.ndarray | int, t_min: np.ndarray | int) -> np.ndarray:
    f = np.minimum(np.asarray(family, dtype=np.int64), _F_MAX) << np.int64(_F_SHIFT)
    e = np.asarray(entity, dtype=np.int64) << np.int64(TIME_BITS)
    t = np.asarray(t_min, dtype=np.int64) & np.int64((1 << TIME_BITS) - 1)
    return f | e | t


# The family's part of a key (:func:`_key` with entity and time 0), by family.
_FAMILY_BITS = _key(np.arange(_F_MAX + 1), 0, 0)
_PEAK_KEY, _SHORT_KEY = _key(_PEAK, 0, 0), _key(_SHORT, 0, 0)


def entities(session_ids: Sequence[str]) -> np.ndarray:
    """The entity part of the sessions' keys (CRC-32 of each id), for :func:`column_keys`
    and :func:`row_keys`."""
    return np.array([zlib.crc32(s.encode()) for s in session_ids], dtype=np.int64)


def column_keys(step_end_min: np.ndarray, ent: np.ndarray, layout) -> np.ndarray:
    """One key per LP column of ``layout`` (:class:`megastation.dispatch.lp._Layout`);
    ``ent``: the sessions' :func:`entities`."""
    v = layout
    keys = np.zeros(v.n_var, dtype=np.int64)
    # the per-step blocks fill the first columns, block by block (lp.BLOCKS): all at once
    by_step = _key(0, 0, step_end_min)
    keys[: v.i_peak] = (_FAMILY_BITS[1 : len(v.col) + 1, None] | by_step[None, :]).ravel()
    keys[v.i_peak] = _PEAK_KEY
    if v.n_pairs:
        keys[v.i_pair] = _key(_PAIR, ent[v.ps], step_end_min[v.pt])
        cp = v.chat_pairs
        keys[v.i_chat] = _key(_CHAT, ent[v.ps[cp]], step_end_min[v.pt[cp]])
    keys[v.i_u1] = _key(_U1, ent, 0)
    keys[v.i_u2] = _key(_U2, ent, 0)
    keys[v.i_short] = _SHORT_KEY
    return keys


def row_keys(
    step_end_min: np.ndarray,
    ent: np.ndarray,
    layout,
    eq_blocks: Sequence[int],
    ub_blocks: Sequence[int],
) -> np.ndarray:
    """One key per LP row: the equality families' rows (lengths ``eq_blocks``, in the
    order added), then the inequalities' (``ub_blocks``); ``ent``: as for :func:`column_keys`."""
    v = layout
    T, S = step_end_min.size, v.n_sessions
    cp = v.chat_pairs
    parts = []
    by_step = _key(0, 0, step_end_min)  # a family's key is its bits or'ed onto these
    for family0, blocks in ((0, eq_blocks), (_UB_FAMILY0, ub_blocks)):
        for k, n in enumerate(blocks):
            f = family0 + k
            if n == T:
                parts.append(by_step | _FAMILY_BITS[min(f, _F_MAX)])
            elif n == T - 1:
                parts.append(by_step[1:] | _FAMILY_BITS[min(f, _F_MAX)])
            elif n == S:
                parts.append(_key(f, ent, 0))
            elif n == cp.size and v.n_pairs:
                parts.append(_key(f, ent[v.ps[cp]], step_end_min[v.pt[cp]]))
            else:
                parts.append(_key(f, np.arange(n), 0))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
