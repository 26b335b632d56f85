"""The report's A/B section: the read-out table, the decision, and each arm's hit rate over nights
with its 95% band; and the gate's account of what it compared."""

from __future__ import annotations

import datetime as dt
import html
from typing import Any

from recsys_core.reporting._digest import fmt
from recsys_core.reporting._plots import _png
from recsys_core.results import AbtestResult, ChampionEntry, GateReport

__all__ = ["abtest_png", "abtest_section", "gate_section"]


def abtest_png(readout: AbtestResult) -> bytes:
    """Each arm's hit rate per night (line) with its Wilson 95% interval (band)."""
    from matplotlib.dates import DateFormatter  # imported when drawn: seconds to import
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    nights = [n for n in readout.nights if (n.feedback_days or 0) > 0]
    for arm in readout.arms:
        rows = sorted((n for n in nights if n.arm == arm.name), key=lambda n: n.run_date)
        if not rows:
            continue
        x = [dt.date.fromisoformat(n.run_date) for n in rows]
        (line,) = ax.plot(
            x, [n.hit_rate for n in rows], marker="o", label=f"{arm.name} ({arm.model})"
        )
        ax.fill_between(
            x,
            [n.hit_rate_low for n in rows],
            [n.hit_rate_high for n in rows],
            color=line.get_color(),
            alpha=0.2,
        )
    title = f"A/B {readout.experiment}: hit rate per night (95% band)"
    if readout.difference is not None and readout.ci is not None:
        low, high = readout.ci
        title += (
            f"\n{readout.comparison} over all nights: {readout.difference:+.3f} "
            f"[{low:+.3f}, {high:+.3f}]"
        )
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("run date (night the list was served)")
    ax.set_ylabel("users with a hit")
    ax.xaxis.set_major_formatter(DateFormatter("%m-%d"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _png(fig)


def _pct(v: Any) -> str:
    return "" if v is None else f"{float(v):.2%}"


def abtest_section(readout: AbtestResult | None, img: Any) -> str:
    """HTML of the read-out (empty without one); ``img(png, alt)`` embeds a picture."""
    if readout is None:
        return ""
    flagged = readout.srm
    cls = "flag" if flagged else ("promote" if readout.winner else "keep")
    parts = [
        f"<h2>A/B experiment {html.escape(readout.experiment)}</h2>",
        f'<div class="{cls}"><b>{html.escape(readout.decision)}</b><br>'
        f"{html.escape(readout.reason)}</div>",
    ]
    rows = []
    for a in readout.arms:
        ci = a.ci or (None, None)
        rows.append(
            f"<tr><td>{html.escape(a.name)}</td><td>{html.escape(a.model)}</td>"
            f"<td class=n>{a.share:.0%}</td><td class=n>{a.assigned_users}</td>"
            f"<td class=n>{a.users}</td><td class=n>{a.users_with_hit}</td>"
            f"<td class=n>{_pct(a.hit_rate)}</td><td class=n>{_pct(ci[0])} to {_pct(ci[1])}</td></tr>"
        )
    parts.append(
        "<table><tr><th>arm</th><th>model</th><th>share</th><th>assigned users</th>"
        "<th>exposed users with feedback</th><th>users with a hit</th><th>hit rate</th>"
        "<th>95% interval</th></tr>" + "".join(rows) + "</table>"
    )
    if readout.difference is not None and readout.ci is not None:
        parts.append(
            f"<p>{html.escape(readout.comparison)}: <b>{readout.difference:+.2%}</b> (95% "
            f"interval {readout.ci[0]:+.2%} to {readout.ci[1]:+.2%}), p = "
            f"{fmt(readout.p_value)}. Sample-ratio check p = {fmt(readout.srm_p_value)}"
            f"{' — MISMATCH' if flagged else ''}. The unit is the user, pooled over "
            f"{readout.nights_with_feedback} night(s); an event counts within "
            f"{readout.attribution_days} day(s) after the night's list.</p>"
        )
    observed = [n for n in readout.nights if (n.feedback_days or 0) > 0]
    n_arms = max(1, len(readout.arms))
    if observed:
        parts.append(img(abtest_png(readout), "A/B hit rate per night"))
        last = sorted(observed, key=lambda n: (n.run_date, n.arm))[-3 * n_arms :]
        rows = "".join(
            f"<tr><td>{n.run_date}</td><td>{html.escape(n.arm)}</td>"
            f"<td class=n>{n.exposed_users}</td><td class=n>{_pct(n.hit_rate)}</td>"
            f"<td class=n>{fmt(n.hits_per_user)}</td><td class=n>{fmt(n.clicks_per_user)}</td>"
            f"<td class=n>{fmt(n.purchases_per_user)}</td><td class=n>{_pct(n.coverage)}</td>"
            f"<td class=n>{n.feedback_days}</td></tr>"
            for n in last
        )
        parts.append(
            "<p>Latest nights with feedback:</p><table><tr><th>night</th><th>arm</th>"
            "<th>exposed users</th><th>hit rate</th><th>hits/user</th><th>clicks/user</th>"
            "<th>purchases/user</th><th>catalog coverage</th><th>days observed</th></tr>"
            + rows
            + "</table>"
        )
    return "\n".join(parts)


def gate_section(gate: GateReport, champion: ChampionEntry | None) -> str:
    """What the champion gate compared, in words (the decision itself is in the headline)."""
    items = []
    if champion:
        items.append(
            f"Serving champion {champion.model_id} ({champion.name}), trained on "
            f"events up to {champion.trained_until or gate.champion_trained_until}."
        )
    hold = gate.holdout
    if hold:
        items.append(f"Tonight's holdout: {hold[0]} to {hold[1]}.")
    for note in (gate.recipe_note, gate.regression_note):
        if note:
            items.append(note)
    for c in gate.checks:
        verdict = "passed" if c.decision.promote else "FAILED"
        items.append(f"{c.label} — {verdict}: {c.decision.reason}")
    body = "".join(f"<li>{html.escape(str(i))}</li>" for i in items)
    return f"<h2>The champion gate</h2><ul>{body}</ul>"
