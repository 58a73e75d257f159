"""Rich displays of the notebook layer: ``%jpar status`` and per-engine cell results (HTML + text)."""

from __future__ import annotations

import html
from typing import Any

__all__ = ["StatusTable", "PerEngine", "format_bytes"]


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _resources(res: dict) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in sorted(res.items()) if isinstance(v, (int, float)))


class StatusTable:
    """What ``%jpar status`` shows: the cluster, its engines (load, memory, store use) and task counts."""

    _COLUMNS = ("engine", "node", "pid", "CPU", "RSS", "store", "queued", "running")

    def __init__(self, status: dict):
        self.status = status

    def rows(self) -> list[tuple]:
        out = []
        for e in sorted(self.status.get("engines", []), key=lambda e: e["id"]):
            out.append((str(e["id"]), e.get("node", ""), str(e.get("pid", "")), f"{e.get('cpu', 0.0):.0f}%",
                        format_bytes(e.get("rss", 0)), format_bytes(e.get("shared", 0)), str(e.get("queued", 0)),
                        "yes" if e.get("task") else "-"))
        return out

    def _summary(self) -> list[str]:
        st = self.status
        tasks = (st.get("scheduler") or {}).get("tasks", {})
        counts = ", ".join(f"{k} {v}" for k, v in sorted(tasks.items()) if v) or "none"
        return [
            f"jpar cluster {st.get('cluster_id', '?')} at {st.get('head', '?')}, up {st.get('uptime_s', 0):.0f} s",
            f"{len(st.get('engines', []))} engines; resources {_resources(st.get('resources', {}))}; "
            f"available {_resources(st.get('available', {}))}",
            f"{len(st.get('clients', []))} clients; tasks: {counts}",
        ]

    def __repr__(self) -> str:
        rows = [self._COLUMNS, *self.rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self._COLUMNS))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        return "\n".join(self._summary() + [""] + lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{c}</th>" for c in self._COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in self.rows())
        summary = "<br>".join(html.escape(s) for s in self._summary())
        return f"<div class='jpar-status'>{summary}<table><tr>{head}</tr>{body}</table></div>"


class PerEngine(dict):
    """The last expression's value of a ``%%remote`` cell on each engine: ``{engine_id: value}``."""

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        if cycle:
            p.text("PerEngine(...)")
            return
        from IPython.lib.pretty import pretty

        for i, (eid, value) in enumerate(sorted(self.items())):
            prefix = f"[engine {eid}] "
            text = pretty(value, max_width=max(20, p.max_width - len(prefix)))
            p.text(("\n" if i else "") + prefix + text.replace("\n", "\n" + " " * len(prefix)))

    def __repr__(self) -> str:
        return "\n".join(f"[engine {eid}] {value!r}" for eid, value in sorted(self.items()))
