"""Build hooks (the metadata is in setup.cfg).

A wheel must run without the repository: `build_py` copies the top-level
asterisk/ configuration into khhf/_shipped/ (see
khhf/shipped.py) and compiles the message catalogs in khhf/translations
(.po -> .mo, only the .mo is shipped), since an installed package directory is not writable by the
services.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SHIPPED = ("asterisk", "kamailio")
# rendered by `khhf pbx`, never shipped (an old checkout may still have one)
NOT_SHIPPED = ("asterisk/pjsip.d/50-desk-phones.conf",)


class BuildPy(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install uses the checkout's own files
        build = Path(self.build_lib)
        target = build / "khhf" / "_shipped"
        shutil.rmtree(target, ignore_errors=True)
        for name in SHIPPED:
            src = HERE / name
            if src.is_dir():
                shutil.copytree(src, target / name, ignore=lambda d, names: [
                    n for n in names if str((Path(d) / n).relative_to(HERE)) in NOT_SHIPPED])
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target / name)
        from babel.messages.mofile import write_mo
        from babel.messages.pofile import read_po
        for po in (build / "khhf" / "translations").glob("*/LC_MESSAGES/messages.po"):
            with po.open("rb") as fh:
                catalog = read_po(fh)
            with po.with_suffix(".mo").open("wb") as fh:
                write_mo(fh, catalog)
            # ship only the compiled catalog: next to an unpacked .po (pip sets
            # no mtimes) the web UI would try to recompile it into the
            # package directory, which a service may not write to
            po.unlink()


setup(cmdclass={"build_py": BuildPy})
