"""`khhf init` creates the database where every other command will look."""

import os
import subprocess
import sys


def test_init_honours_the_environment_like_every_other_command(tmp_path):
    conf, home = tmp_path / "khhf.conf", tmp_path / "state"
    env = dict(os.environ, KHHF_CONFIG=str(conf), KHHF_HOME=str(home))
    env.pop("KHHF_DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-m", "khhfcli.main", "init"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (home / "khhf.db").is_file(), done.stdout
    assert str(home / "khhf.db") in done.stdout
    assert oct(conf.stat().st_mode & 0o777) == "0o600"
