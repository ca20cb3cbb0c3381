"""Cutting (window, features) samples out of per-symbol feature blocks, on the fly.

Windows overlap by window-1 rows, so storing them would multiply memory by the window length. Instead a block
keeps each row once and a window is an index: the row where it ends. This one function turns a block and a set
of end rows into (windows, targets); training, evaluation and serving all call it.
"""

from __future__ import annotations

import numpy as np


def window_ends(t: np.ndarray, window: int, group: np.ndarray | None = None) -> np.ndarray:
    """Row indices that can end a full window of ``window`` consecutive days of one symbol.

    ``t`` is each row's bar number within its symbol (rows sorted by symbol, then date) and ``group`` the
    symbol of each row. A row ends a window when the row ``window - 1`` above it belongs to the same symbol
    and lies exactly ``window - 1`` bars earlier: windows never cross symbols or skip a dropped row.
    """
    t = np.asarray(t)
    if len(t) < window:
        return np.empty(0, dtype=np.int64)
    ends = np.arange(window - 1, len(t))
    ok = t[ends] - t[ends - (window - 1)] == window - 1
    if group is not None:
        group = np.asarray(group)
        ok &= group[ends] == group[ends - (window - 1)]
    return ends[ok]


def cut_windows(block, ends, window: int, targets=None):
    """Windows of ``window`` rows ending at each of ``ends``: shape (len(ends), window, n_features).

    Works on numpy arrays and torch tensors alike (fancy indexing), so a block already on the GPU stays there.
    Returns (windows, targets[ends]) when ``targets`` is given, else the windows alone.
    """
    offsets = np.arange(1 - window, 1)
    if hasattr(block, "device"):  # a torch tensor
        import torch

        ends_t = torch.as_tensor(ends, device=block.device)
        idx = ends_t[:, None] + torch.as_tensor(offsets, device=block.device)
        windows = block[idx]
        return windows if targets is None else (windows, targets[ends_t])
    ends = np.asarray(ends)
    if len(ends) and (ends.min() < window - 1 or ends.max() >= len(block)):
        raise IndexError(f"window ends must lie in [{window - 1}, {len(block) - 1}]")
    windows = block[ends[:, None] + offsets]
    return windows if targets is None else (windows, targets[ends])
