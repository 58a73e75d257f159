"""A layered layout of a directed graph (pure Python): layers by longest path, barycentre ordering.

Used by the dashboard to place the task DAG in the kernel and send positions to the browser
(a layout in Python costs ~1 ms for 200 nodes; dagre in JS took ~0.6 s). Nodes are laid out
left to right: a node's layer is the longest path from a source, so every edge points right;
within a layer nodes are ordered by the mean position of their neighbours (a few sweeps), and
a layer taller than ``max_rows`` wraps into several columns. Cycles (possible between groups)
are broken by taking the remaining nodes in input order.

Actor calls go to lanes of their own (``lanes``: node -> lane key): one row per actor under the
other tasks, its calls in submission order, so an actor's story reads left to right and never
shares a column with unrelated tasks.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

__all__ = ["layered_layout", "layers", "lane_layout"]


def layers(nodes: Sequence[Hashable], edges: Iterable[tuple[Hashable, Hashable]]) -> dict:
    """``{node: layer}``: 0 for sources, else one more than the deepest predecessor."""
    index = {n: i for i, n in enumerate(nodes)}
    succ: list[list[int]] = [[] for _ in nodes]
    indeg = [0] * len(nodes)
    for a, b in edges:
        ia, ib = index.get(a), index.get(b)
        if ia is None or ib is None or ia == ib:
            continue
        succ[ia].append(ib)
        indeg[ib] += 1
    layer = [0] * len(nodes)
    done = [False] * len(nodes)
    ready = [i for i in range(len(nodes)) if indeg[i] == 0]
    remaining = len(nodes)
    nxt = 0
    while remaining:
        if not ready:   # a cycle: take the first node not placed yet
            while done[nxt]:
                nxt += 1
            ready.append(nxt)
            indeg[nxt] = 0
        i = ready.pop()
        if done[i]:
            continue
        done[i] = True
        remaining -= 1
        li = layer[i] + 1
        for j in succ[i]:
            if done[j]:
                continue
            if layer[j] < li:
                layer[j] = li
            indeg[j] -= 1
            if indeg[j] == 0:
                ready.append(j)
    return {n: layer[i] for i, n in enumerate(nodes)}


def layered_layout(nodes: Sequence[Hashable], edges: Sequence[tuple[Hashable, Hashable]], *,
                   max_rows: int = 24, sweeps: int = 2, lay: dict | None = None) -> dict:
    """``{node: (x, y)}`` in grid units (column, row): edges point to higher columns. ``lay``: the
    layers to use (default :func:`layers`); every layer up to the deepest takes at least a column."""
    if not nodes:
        return {}
    lay = layers(nodes, edges) if lay is None else lay
    nlayers = max(lay.values()) + 1
    rows: list[list] = [[] for _ in range(nlayers)]
    for n in nodes:                      # input order (submission order) as the first guess
        rows[lay[n]].append(n)
    preds: dict = {}
    succs: dict = {}
    for a, b in edges:
        if a in lay and b in lay and a != b:
            preds.setdefault(b, []).append(a)
            succs.setdefault(a, []).append(b)
    pos = {n: float(i) for r in rows for i, n in enumerate(r)}

    def sweep(order: range, neighbours: dict) -> None:
        for li in order:
            row = rows[li]
            if len(row) < 2:
                continue
            keyed = []
            for i, n in enumerate(row):
                nb = neighbours.get(n)
                if nb:
                    keyed.append((sum(pos[m] for m in nb) / len(nb), i, n))
                else:
                    keyed.append((pos[n], i, n))
            keyed.sort(key=lambda k: (k[0], k[1]))
            rows[li] = row = [k[2] for k in keyed]
            for i, n in enumerate(row):
                pos[n] = float(i)

    for _ in range(sweeps):
        sweep(range(1, nlayers), preds)
        sweep(range(nlayers - 2, -1, -1), succs)

    out = {}
    tallest = min(max(len(r) for r in rows), max_rows)
    x = 0
    for row in rows:
        cols = max(1, -(-len(row) // max_rows))
        per_col = -(-len(row) // cols) if row else 0
        for i, n in enumerate(row):
            col, r = divmod(i, per_col)
            # centre short columns against the tallest one
            offset = (tallest - min(per_col, len(row) - col * per_col)) / 2.0
            out[n] = (float(x + col), r + offset)
        x += cols
    return out


def lane_layout(nodes: Sequence[Hashable], edges: Sequence[tuple[Hashable, Hashable]], lanes: dict, *,
                max_rows: int = 24) -> tuple[dict, list]:
    """``({node: (x, y)}, [(lane, row)])``: free nodes as :func:`layered_layout`; the nodes of each
    lane (``lanes[node]``; absent: free) on a row of its own below them, x their index in the lane
    (input order: an actor's calls in submission order; the browser spaces lanes by their own width).
    An edge between a free node and a lane node may point left: a lane's order is its calls' order."""
    free = [n for n in nodes if n not in lanes]
    pos = dict(layered_layout(free, [(a, b) for a, b in edges if a not in lanes and b not in lanes],
                              max_rows=max_rows)) if free else {}
    top = (max(y for _, y in pos.values()) + 1.5) if pos else 0.0
    rows: dict = {}
    count: dict = {}
    for n in nodes:
        lane = lanes.get(n)
        if lane is not None:
            row = rows.setdefault(lane, top + len(rows))
            pos[n] = (float(count.get(lane, 0)), row)
            count[lane] = count.get(lane, 0) + 1
    return pos, list(rows.items())
