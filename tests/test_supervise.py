"""The demo's supervisor with real processes: a child that exits is
reported in one line and started again after a back-off while the others
keep running; a child due for renewal is restarted; stop_all stops all."""

import subprocess
import sys
import time

from khhfcli import supervise
from khhfcli.supervise import Child, Supervisor


def _child(name, code=None):
    """A process that exits with `code` at once, or runs until stopped."""
    procs = []
    script = f"import sys; sys.exit({code})" if code is not None else "import time; time.sleep(600)"

    def start():
        procs.append(subprocess.Popen([sys.executable, "-c", script]))
        return procs[-1]

    def stop():
        for p in procs:
            if p.poll() is None:
                p.terminate()
            p.wait()
    return Child(name, start, stop), procs


def _run_until(supervisor, done, timeout=20):
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline
        supervisor.check()
        time.sleep(0.05)


def test_an_exited_child_is_reported_and_restarted_with_backoff(monkeypatch):
    monkeypatch.setattr(supervise, "BACKOFF_FIRST", 0.2)
    said = []
    supervisor = Supervisor(say=said.append)
    steady, steady_procs = _child("steady")
    flaky, flaky_procs = _child("flaky", code=3)
    supervisor.add(steady)
    supervisor.add(flaky)
    _run_until(supervisor, lambda: len(flaky_procs) == 3)
    assert said[0] == "khhf demo: flaky exited (exit code 3); restarting in 0.2 s"
    assert said[1].startswith("khhf demo: flaky restarted (pid ")
    assert said[2] == "khhf demo: flaky exited (exit code 3); restarting in 0.4 s"  # backs off
    assert len(steady_procs) == 1 and steady_procs[0].poll() is None   # the rest keep running
    supervisor.stop_all()
    assert steady_procs[0].poll() is not None
    assert all(p.poll() is not None for p in flaky_procs)


def test_a_killed_child_and_renewal():
    said = []
    supervisor = Supervisor(say=said.append)
    child, procs = _child("phone")
    child.renew_after = 0.3
    child.renew_why = "to register again"
    supervisor.add(child)
    _run_until(supervisor, lambda: len(procs) == 2)
    assert said[0] == "khhf demo: restarting phone to register again"
    procs[1].kill()
    _run_until(supervisor, lambda: len(procs) == 3)
    assert "khhf demo: phone exited (killed by signal 9); restarting in 1 s" in said
    supervisor.stop_all()
    assert all(p.poll() is not None for p in procs)


def test_a_configuration_error_is_not_restarted():
    said = []
    supervisor = Supervisor(say=said.append)
    child, procs = _child("webui", code=2)
    child.final_codes = (2,)
    supervisor.add(child)
    deadline = time.monotonic() + 5
    while not said:
        assert time.monotonic() < deadline
        supervisor.check()
        time.sleep(0.05)
    assert said == ["khhf demo: webui exited (exit code 2: cannot start as configured); "
                    "not restarting it"]
    time.sleep(1.2)
    supervisor.check()
    assert len(procs) == 1
    supervisor.stop_all()
