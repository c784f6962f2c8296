"""The catalog is the domain's (khhf/i18n.py): the command line and the SMS
path speak Chinese from it without importing the web UI, and the web sees
the same catalog in the request's language."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from khhf import config, db, i18n

CHECK = textwrap.dedent("""
    import importlib, pkgutil, sys
    import khhfcli, smsgw
    for package in (khhfcli, smsgw):
        for module in pkgutil.iter_modules(package.__path__):
            if module.name != "__main__":
                importlib.import_module(f"{package.__name__}.{module.name}")
    from khhfcli import main as cli
    from khhf.i18n import translator
    from khhf.services import sms_feedback
    # an SMS reply handled end to end by the command line, and a rejects file's words
    assert cli.main(["--config", sys.argv[1], "sms", "inject", "--from", "+86 137 0000 0001",
                     "hello"]) == 0
    assert translator("zh")("Administrator") == "管理员"
    web = sorted(m for m in sys.modules if m.split(".")[0] in ("webui", "flask", "flask_babel"))
    print("web modules:", *web)
""")


def test_the_command_line_and_the_sms_path_do_not_import_the_web(tmp_path):
    settings = config.write_new(tmp_path / "khhf.conf", home=tmp_path)
    engine = db.make_engine(settings.database_url)
    db.create_schema(engine)
    engine.dispose()
    proc = subprocess.run([sys.executable, "-c", CHECK, str(tmp_path / "khhf.conf")],
                          capture_output=True, text=True, env=os.environ, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "stored as received" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "web modules:", proc.stdout


def test_explicit_current_and_spoken_locales():
    assert i18n.gettext("Administrator", "en") == "Administrator"
    assert i18n.gettext("Administrator") == "管理员"            # the default, outside a request
    label = i18n.ROLE_LABELS["admin"]
    with i18n.speaking("en"):
        assert str(label) == "Administrator" and i18n.join_items(["a", "b"]) == "a, b"
    assert str(label) == "管理员" and i18n.join_items(["甲", "乙"]) == "甲、乙"
