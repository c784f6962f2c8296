"""Progressive dial (自动连拨) against one-by-one clicking, with automatic
outcomes (自动结果): call attempts and talk minutes per manager-hour, both
modes measured in the same run, and the gap from an unreached call's end
to the next call's INVITE.

Method: a real Asterisk (sid root), the AMI bridge, the web UI served by
waitress (8 threads, as deployed) and a real browser (Debian's chromium via
Playwright) playing the manager on the workspace page. The manager's desk
phone is a SIPp phone that picks up after --pickup s. The carrier is SIPp
playing a population of customers (simkit/scenarios/carrier_mix.xml): each
call is answered with probability --answer-pct after a ring time uniform in
[--ring-min, --ring-max] s and talks for a time uniform in [--talk-min,
--talk-max] s; the others ring until the PBX gives up after --no-answer s.
The task type has the standard automatic outcomes: a call that rings out
is filed by the system (3 无人接听, due again after a delay longer than the
run), so the manager files only answered calls, taking --filing s
("1 回访成功").

- progressive: the manager switches 自动连拨 on once; after each result, and
  at once after an unreached call, the page dials the next due task after
  its pause (--pause s). The gap from an unreached call's end (its row's
  end_at) to the next call's first channel (Asterisk's Newchannel of the
  desk leg, the moment its INVITE is sent; both stamped by Asterisk's
  clock) is the pause plus what the page, the web UI and the bridge add.
- one-by-one: after each result the manager is back on the task list and
  clicks 呼叫 on the next task. The human part of that - reading the list,
  choosing the next customer, clicking - is not something a script does
  naturally, so it is modelled explicitly as --human s of waiting before
  the click (on top of the page loads the browser really does).

All times are real time scaled down by 3 from a realistic day (ring 9-24 s,
no answer after 30 s, talk 15-45 s, filing 9 s, a 30 s human gap between
calls, the product's 5 s pause ≈ 2 s), so a run takes minutes; attempts per
hour are then divided by 3 to report the realistic rate. The ratio, the
answer rate and the talk share of the hour do not depend on the scale; the
gap's overhead is not scaled (it is the system's own time).

    python3 -m bench.progressive [--calls 15]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select  # noqa: E402
from waitress.server import create_server  # noqa: E402

from khhf import db  # noqa: E402
from khhf.calls.states import FINAL_STATES, CallOutcome  # noqa: E402
from khhf.models import Call, CallEvent  # noqa: E402
from simkit import factories  # noqa: E402
from simkit.bridge_env import BridgeEnv  # noqa: E402
from simkit.browser import CHROMIUM, CHROMIUM_ARGS, log_in  # noqa: E402
from simkit.harness import PbxHarness  # noqa: E402
from simkit.sipp import free_port  # noqa: E402

SCALE = 3
TALK_MINUTES_PUBLISHED = 40  # talk minutes per agent-hour, one line per agent (preview/progressive)


def one_call(page, args, last: str) -> tuple[bool, str]:
    """On the task's page after a dial (a call other than `last`): wait for
    its end; file the result of an answered call (the system files the
    others). Returns (answered, the call's id)."""
    page.wait_for_url(lambda url: "#call-" in url and not url.endswith(f"#call-{last}"),
                      timeout=120_000)
    call_id = page.url.rsplit("#call-", 1)[1]
    page.wait_for_function(
        "final => final.includes(document.getElementById('call-panel').dataset.state)",
        arg=sorted(FINAL_STATES), timeout=120_000)
    answered = page.evaluate(
        "document.getElementById('call-panel').dataset.outcome") == CallOutcome.ANSWERED
    if answered:
        time.sleep(args.filing)
        page.select_option("#result_code", label="1 回访成功")
        page.get_by_role("button", name="保存结果").click()
        page.wait_for_load_state()
    return answered, call_id


def run_mode(mode, page, base, env, args, first_phone):
    task_ids = [env.task_for("8001", str(first_phone + i), "auto") for i in range(args.calls)]
    page.goto(f"{base}/manager/")
    answered, last = 0, ""
    started = time.monotonic()
    if mode == "progressive":
        page.get_by_label("自动连拨").check()
    for _ in task_ids:
        if mode == "one-by-one":
            page.goto(f"{base}/manager/?tab=todo")
            time.sleep(args.human)  # modelled: read the list, choose, click
            page.locator("#tasks form.js-dial button").first.click()
        reached, last = one_call(page, args, last)
        answered += reached
    if mode == "progressive":  # the last call's end, as for the others
        page.wait_for_function("() => document.getElementById('ws-message')"
                               ".textContent.includes('自动连拨已停止')", timeout=60_000)
    elapsed = time.monotonic() - started
    with env.sessions() as s:
        calls = s.scalars(select(Call).where(Call.task_id.in_(task_ids))
                          .order_by(Call.id)).all()
        talk = [c.talk_seconds or 0 for c in calls]
        requested = [c.requested_at for c in calls]
        # an unreached call's end -> the next call's first channel (its INVITE)
        unreached_gaps = []
        for a, b in zip(calls, calls[1:]):
            if a.outcome != CallOutcome.ANSWERED and a.end_at is not None:
                first = s.scalar(select(func.min(CallEvent.event_at))
                                 .where(CallEvent.call_id == b.id))
                unreached_gaps.append((first - a.end_at).total_seconds())
    assert len(calls) == args.calls, f"{mode}: {len(calls)} calls for {args.calls} tasks"
    gaps = [(b - a).total_seconds() for a, b in zip(requested, requested[1:])]
    return {"mode": mode, "attempts": len(calls), "answered": answered, "elapsed": elapsed,
            "per_hour": len(calls) * 3600 / elapsed / SCALE,
            "talk_min_per_hour": sum(talk) / elapsed * 60,
            "mean_between": statistics.mean(gaps) if gaps else 0.0,
            "talk": sum(talk), "unreached_gaps": unreached_gaps}


def quantile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))] if values else 0.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.progressive",
                                description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=15, help="call attempts per mode")
    p.add_argument("--answer-pct", type=int, default=60)
    p.add_argument("--ring-min", type=float, default=3)
    p.add_argument("--ring-max", type=float, default=8)
    p.add_argument("--talk-min", type=float, default=5)
    p.add_argument("--talk-max", type=float, default=15)
    p.add_argument("--no-answer", type=int, default=10)
    p.add_argument("--pickup", type=float, default=1)
    p.add_argument("--filing", type=float, default=3)
    p.add_argument("--pause", type=int, default=2)
    p.add_argument("--human", type=float, default=10)
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="khhf-bench-progressive-"))
    with PbxHarness(work, desk_extensions=["8001"]) as harness:
        env = BridgeEnv(harness, work)
        env.settings = dataclasses.replace(env.settings, customer_ring_seconds=args.no_answer,
                                           manager_ring_seconds=10)
        env.start()
        with db.unit_of_work(env.sessions) as s:  # retried long after the run
            factories.automatic_task_type(s, retry_minutes=600, max_retries=2)
        app, password = env.web_app("m8001")
        app.config.update(WORKSPACE_AUTODIAL_SECONDS=args.pause)
        port = free_port(kind=1)
        server = create_server(app, host="127.0.0.1", port=port, threads=8)
        threading.Thread(target=server.run, daemon=True).start()
        base = f"http://127.0.0.1:{port}"
        ms = lambda seconds: str(int(seconds * 1000))  # noqa: E731
        # the parties live as long as the run (SIPp's default 120 s limit would end them)
        harness.desk_phone("8001", "answer_after.xml", calls=None, run_limit=None,
                           fill={"RING_MS": ms(args.pickup)})
        harness.trunk("carrier_mix.xml", calls=None, run_limit=None, fill={
            "ANSWER_PCT": args.answer_pct, "RING_MIN_MS": ms(args.ring_min),
            "RING_MAX_MS": ms(args.ring_max), "TALK_MIN_MS": ms(args.talk_min),
            "TALK_MAX_MS": ms(args.talk_max)})
        rows = []
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(locale="zh-CN")
                log_in(page, base, "m8001", password)
                rows.append(run_mode("progressive", page, base, env, args, 13850000000))
                print(f"[progressive] {rows[-1]}", file=sys.stderr)
                rows.append(run_mode("one-by-one", page, base, env, args, 13860000000))
                print(f"[one-by-one] {rows[-1]}", file=sys.stderr)
                browser.close()
        finally:
            server.close()
            env.stop()
    print(f"\nProgressive dial vs one-by-one clicking, with automatic outcomes: {args.calls} "
          f"call attempts each, customers answer {args.answer_pct} % after "
          f"{args.ring_min:g}-{args.ring_max:g} s, talk {args.talk_min:g}-{args.talk_max:g} s, "
          f"no answer after {args.no_answer} s, filing {args.filing:g} s (answered calls "
          f"only), pause {args.pause} s, modelled human gap {args.human:g} s (times scaled "
          f"down {SCALE}x; rates scaled back)\n")
    print("mode | attempts | answered (rate) | elapsed s | s between dials | "
          "attempts per manager-hour | talk min per manager-hour")
    print("--- | --- | --- | --- | --- | --- | ---")
    for r in rows:
        print(f"{r['mode']} | {r['attempts']} | {r['answered']} "
              f"({100 * r['answered'] / r['attempts']:.0f} %) | {r['elapsed']:.0f} | "
              f"{r['mean_between']:.1f} | {r['per_hour']:.0f} | {r['talk_min_per_hour']:.1f}")
    ratio = rows[0]["per_hour"] / rows[1]["per_hour"]
    talk_ratio = rows[0]["talk_min_per_hour"] / max(rows[1]["talk_min_per_hour"], 1e-9)
    print(f"\nratio progressive / one-by-one: attempts {ratio:.2f}x, talk minutes "
          f"{talk_ratio:.2f}x; progressive's talk minutes per hour are "
          f"{rows[0]['talk_min_per_hour'] / TALK_MINUTES_PUBLISHED:.0%} of the "
          f"~{TALK_MINUTES_PUBLISHED} published for one line per agent")
    gaps = rows[0]["unreached_gaps"]
    if gaps:
        over = [g - args.pause for g in gaps]
        print(f"unreached call's end -> next INVITE ({len(gaps)} gaps, progressive): "
              f"p50 {quantile(gaps, 0.5):.2f} s, p95 {quantile(gaps, 0.95):.2f} s, max "
              f"{max(gaps):.2f} s = pause {args.pause} s + p50 {quantile(over, 0.5):.2f} s, "
              f"p95 {quantile(over, 0.95):.2f} s (target: + under 1 s at p95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
