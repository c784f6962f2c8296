"""Click-to-dial latency: from the HTTP request to the INVITE at the desk phone.

Method: a real Asterisk (sid root) on free loopback ports, the AMI bridge and
its command channel in a thread, the web UI served by waitress on loopback,
a manager logged in over HTTP (session cookie + CSRF token), and a SIPp desk
phone that answers every INVITE with 486 (so each call ends at once and the
next click is not refused as "already on a call"). For each of N calls:
t0 = time before POST /calls/dial/<task>; the INVITE's arrival time is read
from SIPp's own message trace (-trace_msg, microsecond timestamps). The
latency is the difference; the HTTP response time is measured too.

    python3 bench/dial_latency.py [--calls 200]
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

from simkit.bridge_env import BridgeEnv  # noqa: E402
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
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
        latencies, responses = [], []
        for i in range(args.calls):
            task_id = env.task_for("8001", f"1380000{i:04d}")
            page = opener.open(f"{base}/manager/").read().decode()
            token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
            seen = len(invite_times(desk.message_file))
            request = urllib.request.Request(
                f"{base}/calls/dial/{task_id}", data=urllib.parse.urlencode(
                    {"csrf_token": token}).encode(), headers={"Accept": "application/json"})
            t0 = time.time()
            body = opener.open(request).read()
            responses.append(time.time() - t0)
            assert json.loads(body)["ok"], body
            deadline = time.monotonic() + 10
            while len(times := invite_times(desk.message_file)) <= seen:
                assert time.monotonic() < deadline, "no INVITE at the desk phone"
                time.sleep(0.005)
            latencies.append(times[seen] - t0)
            env.wait_final(json.loads(body)["call_id"], timeout=10)
        server.close()
        env.stop()
    ms = [v * 1000 for v in latencies]
    http_ms = [v * 1000 for v in responses]
    print(f"\nClick-to-dial latency over {len(ms)} calls (HTTP POST -> INVITE at the desk phone)\n")
    print(f"{'measure':<34}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    print(f"{'HTTP request -> INVITE at desk':<34}{percentile(ms, 50):>10.1f}"
          f"{percentile(ms, 95):>10.1f}{max(ms):>10.1f}")
    print(f"{'HTTP request -> HTTP response':<34}{percentile(http_ms, 50):>10.1f}"
          f"{percentile(http_ms, 95):>10.1f}{max(http_ms):>10.1f}")
    print(f"\nmean {statistics.mean(ms):.1f} ms; target: p95 under 100 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
