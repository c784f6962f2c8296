"""The real browser and a served app, for tests/ and bench/: Debian's
chromium driven by Playwright, the web UI served on 127.0.0.1 from a
thread, log-in, and a watcher of Content-Security-Policy violations."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from waitress import wasyncore
from waitress.server import create_server

CHROMIUM = "/usr/bin/chromium"
# the flags verified on this kind of machine: no sandbox as root, and no
# background traffic to a network that is closed
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

# every violation of the Content-Security-Policy, reported to the console
# (an init script runs outside the page's CSP, so it cannot be refused)
REPORT_CSP_VIOLATIONS = """
document.addEventListener('securitypolicyviolation', e =>
    console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI));
"""


def require_chromium() -> None:
    """A missing browser is a failure, never a skip."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError("Debian's chromium is missing: scripts/install installs it")


@contextlib.contextmanager
def serve(app):
    """Serve `app` on a free loopback port from a thread, with waitress as
    production does (`python -m webui`); yields its base URL.

    The loop runs in short turns so that the stop is clean: the thread ends,
    then every connection the browser left open is closed from here, and the
    request threads are shut down (waitress's own close leaves both)."""
    server = create_server(app, host="127.0.0.1", port=0, threads=8, ident="")
    stopping = threading.Event()

    def run():
        while not stopping.is_set():
            wasyncore.loop(timeout=0.05, map=server._map, use_poll=True, count=1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        stopping.set()
        thread.join()
        for channel in list(server._map.values()):
            channel.close()
        server.task_dispatcher.shutdown()


def csp_problems(context):
    """A list that collects the CSP violations of every page of `context`."""
    problems = []
    context.add_init_script(REPORT_CSP_VIOLATIONS)

    def on_console(message):
        text = message.text
        if "CSP violation" in text or "Content Security Policy" in text:
            problems.append(text)
    context.on("console", on_console)
    return problems


def log_in(page, base, username, password):
    page.goto(f"{base}/login")
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(password)
    page.get_by_role("button", name="登录").click()
    page.wait_for_load_state()
