"""Click-to-dial latency: from the HTTP request to the INVITE at the desk phone.

Method: a real Asterisk (sid root) on free loopback ports, the AMI bridge and
its command channel in a thread, the web UI served by waitress on loopback,
a manager logged in over HTTP (session cookie + CSRF token), and a SIPp desk
phone that answers every INVITE with 486 (so each call ends at once and the
next click is not refused as "already on a call"). For each of N calls:
t0 = time before POST /calls/dial/<task>; the INVITE's arrival time is read
from SIPp's own message trace (-trace_msg, microsecond timestamps). The
latency is the difference; the HTTP response time is measured too.

The dialing rules (khhf.services.dial_rules: calling window, do-not-call,
consent, per-customer limits) are measured before/after in the same run:
the calls alternate between the rules on and the rules off (the check
replaced by one that refuses nothing, in this process), over a calls table
seeded with --history earlier calls (each benchmarked customer has two of
them, hours ago), and the check itself is timed on its own. The figure is
the p95 the rules add; the goal is under 2 ms.

    python3 bench/dial_latency.py [--calls 200] [--history 50000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.cookiejar
import json
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from waitress.server import create_server  # noqa: E402

from khhf import db  # noqa: E402
from khhf.models import Call, Task, utcnow  # noqa: E402
from khhf.services import Problems, dial_rules, number_pool  # noqa: E402
from simkit.bridge_env import UNIFIED, BridgeEnv  # noqa: E402
from simkit.harness import PbxHarness  # noqa: E402
from simkit.sipp import free_port  # noqa: E402

STAMP = re.compile(r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\n[^\n]*received[^\n]*\n\nINVITE ",
                   re.M)


def invite_times(message_file: Path) -> list[float]:
    if not message_file.exists():
        return []
    text = message_file.read_text(errors="replace").replace("\r\n", "\n")
    return [dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
            for m in STAMP.finditer(text)]


def percentile(values, p):
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def seed_history(env, numbers: list[str], rows: int) -> None:
    """`rows` ended outbound calls over the last 3 days to 20,000 other
    numbers, and two to each of `numbers` 3 and 4 hours ago."""
    now = utcnow()
    made = [{"direction": "outbound", "customer_number": f"1590{n % 20000:07d}",
             "unified_number": UNIFIED, "state": "ended", "outcome": "no_answer",
             "requested_at": now - dt.timedelta(seconds=n * 259200 // max(rows, 1))}
            for n in range(rows)]
    made += [{"direction": "outbound", "customer_number": number, "unified_number": UNIFIED,
              "state": "ended", "outcome": "no_answer",
              "requested_at": now - dt.timedelta(hours=hours)}
             for number in numbers for hours in (3, 4)]
    with db.unit_of_work(env.sessions) as s:
        s.execute(Call.__table__.insert(), made)


def time_the_check(env, task_ids: list[int]) -> dict[str, list[float]]:
    """The checks alone, in ms, once per task (as request_call runs them):
    the dialing rules, and the choice of the unified number from the
    county's pool (rolled back: it stamps the number's last use); the wall
    time, and this thread's CPU time (SQLite works in the thread), which a
    loaded host's other processes do not inflate."""
    out: dict[str, list[float]] = {k: [] for k in ("rules wall", "rules CPU", "choice wall",
                                                   "choice CPU")}

    def timed(name, fn):
        t0, c0 = time.perf_counter(), time.thread_time()
        fn()
        out[f"{name} CPU"].append((time.thread_time() - c0) * 1000)
        out[f"{name} wall"].append((time.perf_counter() - t0) * 1000)

    with env.sessions() as s:
        for task_id in task_ids[:20]:   # warm: the statement cache, the pages read
            dial_rules.check(s, env.settings, s.get(Task, task_id), utcnow())
        for task_id in task_ids:
            task = s.get(Task, task_id)
            customer = task.customer   # request_call has it loaded before it asks the rules
            county = customer.county
            timed("rules", lambda: dial_rules.check(s, env.settings, task, utcnow()))
            timed("choice", lambda: number_pool.choose(s, env.settings, county, customer.id,
                                                       utcnow(), Problems()))
            s.rollback()
        for values in out.values():
            del values[:20]   # the first choices warm their own statements
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--history", type=int, default=50_000)
    args = parser.parse_args()
    rules_check = dial_rules.check
    work = Path(tempfile.mkdtemp(prefix="khhf-bench-dial-"))
    with PbxHarness(work, desk_extensions=["8001"]) as harness:
        env = BridgeEnv(harness, work).start()
        app, password = env.web_app("m8001")
        port = free_port(kind=1)
        server = create_server(app, host="127.0.0.1", port=port, threads=4)
        threading.Thread(target=server.run, daemon=True).start()
        base = f"http://127.0.0.1:{port}"
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        html = opener.open(f"{base}/login").read().decode()
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)
        opener.open(f"{base}/login", urllib.parse.urlencode(
            {"username": "m8001", "password": password, "csrf_token": token}).encode())
        desk = harness.desk_phone("8001", "reject.xml", calls=None,
                                  fill={"CODE": 486, "REASON": "Busy Here"})
        numbers = [f"1380000{i:04d}" for i in range(args.calls)]
        task_ids = [env.task_for("8001", number) for number in numbers]
        seed_history(env, numbers, args.history)
        alone = time_the_check(env, task_ids)
        latencies, responses = {True: [], False: []}, {True: [], False: []}
        for i, task_id in enumerate(task_ids):
            rules_on = i % 2 == 0   # interleaved: the same load on both halves
            dial_rules.check = rules_check if rules_on else (lambda *a, **k: [])
            page = opener.open(f"{base}/manager/").read().decode()
            token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
            seen = len(invite_times(desk.message_file))
            request = urllib.request.Request(
                f"{base}/calls/dial/{task_id}", data=urllib.parse.urlencode(
                    {"csrf_token": token}).encode(), headers={"Accept": "application/json"})
            t0 = time.time()
            body = opener.open(request).read()
            responses[rules_on].append(time.time() - t0)
            assert json.loads(body)["ok"], body
            deadline = time.monotonic() + 10
            while len(times := invite_times(desk.message_file)) <= seen:
                assert time.monotonic() < deadline, "no INVITE at the desk phone"
                time.sleep(0.005)
            latencies[rules_on].append(times[seen] - t0)
            env.wait_final(json.loads(body)["call_id"], timeout=10)
        dial_rules.check = rules_check
        server.close()
        env.stop()
    ms = {on: [v * 1000 for v in latencies[on]] for on in (True, False)}
    http_ms = {on: [v * 1000 for v in responses[on]] for on in (True, False)}
    print(f"\nClick-to-dial latency over {args.calls} calls (HTTP POST -> INVITE at the desk "
          f"phone), {args.history} earlier calls in the table\n")
    print(f"{'measure':<44}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    for on in (True, False):
        rules = "rules on" if on else "rules off"
        for name, values in ((f"HTTP request -> INVITE at desk ({rules})", ms[on]),
                             (f"HTTP request -> HTTP response ({rules})", http_ms[on])):
            print(f"{name:<44}{percentile(values, 50):>10.1f}{percentile(values, 95):>10.1f}"
                  f"{max(values):>10.1f}")
    names = {"rules": "dial_rules.check alone", "choice": "number_pool.choose alone"}
    for key, values in alone.items():
        what, clock = key.split()
        label = f"{names[what]} ({'thread CPU' if clock == 'CPU' else 'wall'})"
        print(f"{label:<44}{percentile(values, 50):>10.2f}{percentile(values, 95):>10.2f}"
              f"{max(values):>10.2f}")
    both_cpu = [a + b for a, b in zip(alone["rules CPU"], alone["choice CPU"])]
    check_ms, check_cpu_ms = alone["rules wall"], alone["rules CPU"]
    added = percentile(ms[True], 95) - percentile(ms[False], 95)
    print(f"\np95 added by the rules: {added:+.1f} ms (INVITE), "
          f"{percentile(http_ms[True], 95) - percentile(http_ms[False], 95):+.1f} ms (HTTP); "
          f"the check alone: p95 {percentile(check_ms, 95):.2f} ms wall, "
          f"{percentile(check_cpu_ms, 95):.2f} ms CPU; goal: under 2 ms")
    print(f"rules and the number choice together: p95 {percentile(both_cpu, 95):.2f} ms CPU")
    print(f"mean {statistics.mean(ms[True] + ms[False]):.1f} ms; target: p95 under 100 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
