"""Charts drawn on the server as inline SVG: no script, no outside network,
nothing the Content-Security-Policy would have to allow (presentation
attributes only, no style attributes). A bar or point is a link to the
rows behind it.
"""

from __future__ import annotations

from flask_babel import gettext
from markupsafe import Markup, escape

WIDTH, HEIGHT = 900, 260
LEFT, RIGHT, TOP, BOTTOM = 48, 48, 16, 36
BAR = "#9ec5fe"
CONNECT = "#198754"
FEEDBACK = "#d63384"


def trend_chart(days, drill) -> Markup:
    """Daily calls placed (bars, left axis) with the connect rate and the
    feedback rate (lines, right axis, 0-100%); `drill(day)` is a bar's link."""
    n = max(len(days), 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = max([f.calls_out for _d, f in days] + [1])
    step = plot_w / n
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'class="report-chart" role="img" aria-label="{escape(gettext("Daily trend"))}">']
    for frac in (0, 0.5, 1):
        y = TOP + plot_h * (1 - frac)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" '
                     f'stroke="#dee2e6"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" '
                     f'font-size="11" fill="#6c757d">{round(top * frac)}</text>')
        parts.append(f'<text x="{WIDTH - RIGHT + 6}" y="{y + 4:.1f}" font-size="11" '
                     f'fill="#6c757d">{round(100 * frac)}%</text>')
    lines = {CONNECT: [], FEEDBACK: []}
    label_every = max(1, n // 12)
    for i, (day, f) in enumerate(days):
        x = LEFT + i * step
        h = plot_h * f.calls_out / top
        title = escape(gettext("%(day)s: %(calls)d calls, %(connected)d connected",
                               day=day.isoformat(), calls=f.calls_out,
                               connected=f.calls_connected))
        parts.append(f'<a href="{escape(drill(day))}" data-day="{day.isoformat()}">'
                     f'<rect x="{x + step * 0.15:.1f}" y="{TOP + plot_h - h:.1f}" '
                     f'width="{step * 0.7:.1f}" height="{max(h, 0.5):.1f}" fill="{BAR}">'
                     f'<title>{title}</title></rect></a>')
        cx = x + step / 2
        for color, rate in ((CONNECT, f.connect_rate), (FEEDBACK, f.feedback_rate)):
            if rate is not None:
                lines[color].append(f"{cx:.1f},{TOP + plot_h * (1 - rate):.1f}")
        if i % label_every == 0:
            parts.append(f'<text x="{cx:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
                         f'font-size="11" fill="#6c757d">{day:%m-%d}</text>')
    for color, points in lines.items():
        if points:
            parts.append(f'<polyline points="{" ".join(points)}" fill="none" '
                         f'stroke="{color}" stroke-width="2"/>')
    legend = ((BAR, gettext("Calls placed")), (CONNECT, gettext("Connect rate")),
              (FEEDBACK, gettext("Feedback rate")))
    for i, (color, text) in enumerate(legend):
        x = LEFT + i * 150
        parts.append(f'<rect x="{x}" y="{HEIGHT - 14}" width="12" height="10" fill="{color}"/>'
                     f'<text x="{x + 16}" y="{HEIGHT - 5}" font-size="11" fill="#212529">'
                     f'{escape(text)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
