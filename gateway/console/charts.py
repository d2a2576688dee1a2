"""Pictures drawn on the server as SVG (no script, no inline style: presentation attributes
only, so the page's CSP holds). Every label is escaped text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

COLOURS = ("#8c959f", "#57606a", "#0550ae", "#bf8700", "#116329")


def _text(x: float, y: float, label: object, *, anchor: str = "start", size: int = 12) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
        f'fill="#1b1f24">{escape(str(label))}</text>'
    )


def bars(
    groups: Sequence[tuple[str, Sequence[tuple[str, float]]]], *, title: str, top: float = 1.0
) -> Markup:
    """Grouped bars: per metric (group), one bar per system, values in 0..top."""
    systems = list(dict.fromkeys(name for _, values in groups for name, _ in values))
    width, height, left, bottom = 120 + 150 * len(groups), 240, 40, 40
    plot = height - bottom - 30
    parts = [_text(left, 18, title, size=14)]
    for tick in (0.0, 0.5, 1.0):
        y = 30 + plot * (1 - tick)
        parts.append(
            f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d0d7de"/>'
        )
        parts.append(_text(left - 6, y + 4, f"{tick * top:g}", anchor="end", size=10))
    bar = 110 / max(len(systems), 1)
    for g, (metric, values) in enumerate(groups):
        x0 = left + 20 + g * 150
        for name, value in values:
            s = systems.index(name)
            h = plot * max(0.0, min(value / top, 1.0))
            x = x0 + s * bar
            parts.append(
                f'<rect x="{x:.1f}" y="{30 + plot - h:.1f}" width="{bar - 4:.1f}" '
                f'height="{h:.1f}" fill="{COLOURS[s % len(COLOURS)]}">'
                f"<title>{escape(name)}: {value:.3f}</title></rect>"
            )
            parts.append(
                _text(
                    x + (bar - 4) / 2, 30 + plot - h - 4, f"{value:.2f}", anchor="middle", size=10
                )
            )
        parts.append(_text(x0 + 55, height - bottom + 16, metric, anchor="middle"))
    for s, name in enumerate(systems):
        x = left + 20 + s * 140
        parts.append(_swatch(x, height - 14, COLOURS[s % len(COLOURS)]))
        parts.append(_text(x + 14, height - 5, name, size=11))
    return _svg(width, height, title, parts)


@dataclass(frozen=True)
class Node:
    label: str
    detail: str
    href: str | None = None


def lineage(rows: Sequence[Sequence[Node]], base: Node) -> Markup:
    """One row per model version (this one first): its data files, job, adapter and
    version, left to right; each version points down to its parent, the last to the base."""
    box_w, box_h, gap, row_h = 190, 44, 28, 80
    columns = max((len(row) for row in rows), default=1)
    width = 20 + columns * (box_w + gap)
    height = 20 + (len(rows) + 1) * row_h
    parts: list[str] = []
    last_x = 10 + (columns - 1) * (box_w + gap)
    for r, row in enumerate(rows):
        y = 10 + r * row_h
        offset = columns - len(row)
        for c, node in enumerate(row):
            x = 10 + (c + offset) * (box_w + gap)
            parts.append(_box(x, y, box_w, box_h, node))
            if c:
                parts.append(_arrow(x - gap, y + box_h / 2, x - 2, y + box_h / 2))
        parts.append(_arrow(last_x + box_w / 2, y + box_h + 2, last_x + box_w / 2, y + row_h - 2))
    parts.append(_box(last_x, 10 + len(rows) * row_h, box_w, box_h, base))
    # Its boxes are links: a group, not an image (an image cannot hold controls).
    return _svg(width, height, "lineage", parts, role="group")


def _box(x: float, y: float, w: float, h: float, node: Node) -> str:
    inner = (
        f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6" fill="#f6f8fa" stroke="#57606a"/>'
        + _text(x + 8, y + 18, node.label[:28], size=12)
        + _text(x + 8, y + 34, node.detail[:30], size=10)
    )
    if node.href:
        return f'<a href="{escape(node.href)}">{inner}</a>'
    return inner


def _arrow(x1: float, y1: float, x2: float, y2: float) -> str:
    return (
        f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="#57606a" '
        'stroke-width="1.5" marker-end="url(#arrow)"/>'
    )


def lines(
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    *,
    title: str,
    x_label: str,
    from_zero: bool = True,
) -> Markup:
    """Line chart of (x, y) series, e.g. train and validation loss by step; ``from_zero``
    False fits the y axis to the values (a loss that moves little still shows its shape).
    A series of few points also gets a dot at each."""
    width, height, left, bottom, top = 640, 260, 50, 36, 30
    points = [p for _, values in series for p in values]
    if not points:
        return _svg(width, 60, title, [_text(left, 30, f"{title}: no points yet")])
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    if from_zero:
        y0, y1 = min(0.0, min(ys)), max(ys) if max(ys) > 0 else 1.0
    else:
        pad = (max(ys) - min(ys)) * 0.1 or abs(max(ys)) * 0.01 or 1.0
        y0, y1 = min(ys) - pad, max(ys) + pad
    plot_w, plot_h = width - left - 20, height - top - bottom

    def at(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - x0) / (x1 - x0) * plot_w,
            top + plot_h * (1 - (y - y0) / (y1 - y0)),
        )

    parts = [_text(left, 18, title, size=14)]
    for tick in range(5):
        value = y0 + (y1 - y0) * tick / 4
        y = top + plot_h * (1 - tick / 4)
        parts.append(
            f'<line x1="{left}" x2="{width - 20}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d0d7de"/>'
        )
        parts.append(
            _text(left - 6, y + 4, f"{value:.{3 if from_zero else 4}g}", anchor="end", size=10)
        )
    for x in sorted({x0, (x0 + x1) / 2, x1}):
        parts.append(_text(at(x, y0)[0], top + plot_h + 14, f"{x:g}", anchor="middle", size=10))
    parts.append(_text(left + plot_w / 2, height - 6, x_label, anchor="middle", size=11))
    for s, (name, values) in enumerate(series):
        colour = COLOURS[(s + 2) % len(COLOURS)]
        placed = [at(x, y) for x, y in values]
        if len(placed) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in placed)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
        if len(placed) <= 30:
            parts.extend(
                f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}"/>' for px, py in placed
            )
        parts.append(_swatch(left + 200 + s * 150, 9, colour))
        parts.append(_text(left + 214 + s * 150, 18, name, size=11))
    return _svg(width, height, title, parts)


def _swatch(x: float, y: float, colour: str) -> str:
    return f'<rect x="{x}" y="{y}" width="10" height="10" fill="{colour}"/>'


def _svg(width: float, height: float, title: str, parts: list[str], *, role: str = "img") -> Markup:
    marker = (
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#57606a"/></marker></defs>'
    )
    # Safe: every label went through escape(); the rest is numbers and fixed markup.
    return Markup(  # noqa: S704
        f'<svg xmlns="http://www.w3.org/2000/svg" role="{role}" aria-label="{escape(title)}" '
        f'viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}"><title>{escape(title)}</title>{marker}'
        + "".join(parts)
        + "</svg>"
    )
