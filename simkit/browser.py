"""The real browser and a served app, for tests/ and bench/: Debian's
chromium driven by Playwright, the web UI served on 127.0.0.1 from a
thread, log-in, and a watcher of Content-Security-Policy violations."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from werkzeug.serving import make_server

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
    """Serve `app` on a free loopback port from a thread; yields its base URL."""
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        thread.join()
        httpd.server_close()


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
