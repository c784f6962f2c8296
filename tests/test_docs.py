"""The docs say what the tree holds. README.md is a front door (short, with
every chapter in docs/ and the benchmark log linked); in README.md,
docs/*.md and bench/RESULTS.md every relative link and every repository
path exists, and so does every Python module and `khhf` command (with its
options) named in code. No PBX, no database: a renamed file or command
fails here, not in a newcomer's shell."""

import argparse
import ast
import dataclasses
import re
from pathlib import Path

import pytest

from khhf.config import Settings
from khhfcli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = ROOT / "bench" / "RESULTS.md"
# the front door stays short; 275 since it carries the soak table issue 19 asks for
README_MAX_LINES = 275


def doc_files() -> list[Path]:
    results = [RESULTS] if RESULTS.exists() else []
    return [README, *sorted((ROOT / "docs").glob("*.md")), *results]


FENCE = re.compile(r"^```.*?^```", re.M | re.S)
SPAN = re.compile(r"`((?:[^`\n]|\n(?!\n))+)`")  # may wrap, within a paragraph
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# a path in the repository: one of its top-level folders, then a name
PACKAGES = r"(?:agi|ami_bridge|bench|jobs|khhf|khhfcli|pbxctl|simkit|smsgw|tests|webui)"
PATH = re.compile(rf"(?<![\w./<>-])(?:{PACKAGES}|\.ci|asterisk|docs|scripts)/[\w./*-]*")
MODULE = re.compile(rf"(?<![\w./<>-]){PACKAGES}(?:\.[A-Za-z_]\w*)+")
COMMAND = re.compile(r"(?<![\w./<>-])khhf +([^#`]*)")


def code_of(text: str) -> list[str]:
    """The code in a Markdown text: fenced blocks, line by line, and inline spans."""
    blocks = [line for block in FENCE.findall(text) for line in block.splitlines()[1:-1]]
    return blocks + [span.replace("\n", " ") for span in SPAN.findall(FENCE.sub("", text))]


def prose_of(text: str) -> str:
    """A Markdown text without its code, where links are links."""
    return SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6} +(.*)", line)
        if match:
            base = slug(match.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_the_readme_is_a_front_door():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines, more than {README_MAX_LINES}: it is the front door; "
        f"move the chapter you added to docs/ (or a benchmark's figures to bench/RESULTS.md) "
        f"and link it")


def test_every_chapter_and_the_benchmark_log_are_linked_from_the_readme():
    chapters = sorted((ROOT / "docs").glob("*.md"))
    assert chapters, "docs/ has no chapter: the feature chapters live there"
    assert RESULTS.exists(), "bench/RESULTS.md is missing: the benchmark log lives there"
    linked = {(README.parent / target.split("#")[0]).resolve()
              for target in LINK.findall(prose_of(README.read_text(encoding="utf-8")))}
    missing = [str(p.relative_to(ROOT)) for p in [*chapters, RESULTS] if p.resolve() not in linked]
    assert not missing, f"README.md does not link {missing}: add them to 'Where to read next'"


def test_the_readme_names_every_setting_and_no_other():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Configuration"):].split("\n## ")[0]
    named = {key for row in section.splitlines() if row.startswith("| `")
             for key in re.findall(r"`(\w+)`", row.split(" | ")[0])}
    settings = {f.name for f in dataclasses.fields(Settings)} - {"config_path"}
    assert named == settings, (f"README's configuration table lacks {sorted(settings - named)} "
                               f"and names {sorted(named - settings)}, which khhf/config.py lacks")


def problems_of_links(path: Path) -> list[str]:
    problems = []
    for target in LINK.findall(prose_of(path.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z+.-]*:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            problems.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: no heading with that anchor")
    return problems


def problems_of_paths(path: Path) -> list[str]:
    """Repository paths, in code and in prose alike."""
    problems = []
    for name in PATH.findall(path.read_text(encoding="utf-8")):
        name = name.rstrip(".")
        found = list(ROOT.glob(name.rstrip("/"))) if "*" in name else [ROOT / name]
        if not any(p.exists() for p in found):
            problems.append(f"{name}: no such file or folder")
    return problems


def defined_names(tree) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def module_problem(dotted: str) -> str | None:
    """None when `dotted` names a module of the tree, or a name (a class's
    name too) defined in one; else what is missing."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:i])
        source = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        if source.exists():
            break
    else:
        return f"{dotted}: no such module"
    node = ast.parse(source.read_text(encoding="utf-8"))
    for name in parts[i:]:
        if name not in defined_names(node):
            return f"{dotted}: {'.'.join(parts[:i])} defines no {name}"
        node = next((n for n in node.body if isinstance(n, ast.ClassDef) and n.name == name), None)
        if node is None:  # a function or a value: its attributes are not checked
            return None
    return None


def problems_of_modules(path: Path) -> list[str]:
    return [problem for code in code_of(path.read_text(encoding="utf-8"))
            for dotted in MODULE.findall(code)
            if (problem := module_problem(dotted.rstrip(".")))]


def subcommands(parser: argparse.ArgumentParser) -> dict:
    """A parser's sub-commands (name: its parser), or the choices of its
    first positional (name: None, the last command word)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
        if not action.option_strings and action.choices:
            return dict.fromkeys(action.choices)
    return {}


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def command_problem(line: str, root: argparse.ArgumentParser) -> str | None:
    """None when `khhf <line>` is a real command: each word of `a|b`
    alternatives a sub-command, each --option one it takes."""
    parsers = [root]
    commands = subcommands(root)
    problems = []
    for word in line.split():
        word = word.strip("[](),.;:")
        if word.startswith("--"):
            option = word.split("=")[0]
            if not any(option in options(p) for p in parsers + [root]):
                problems.append(f"no option {option}")
        elif commands and re.fullmatch(r"[a-z][a-z-]*(\|[a-z][a-z-]*)*", word):
            unknown = [w for w in word.split("|") if w not in commands]
            if unknown:
                problems.append(f"no sub-command {'|'.join(unknown)}")
                break
            found = [commands[w] for w in word.split("|")]
            parsers = found if None not in found else parsers
            commands = subcommands(parsers[0]) if None not in found else {}
        else:
            commands = {}  # an argument (FILE, M017, 客户.xlsx): no more command words
    return f"khhf {line.strip()}: {', '.join(problems)}" if problems else None


def problems_of_commands(path: Path) -> list[str]:
    root = build_parser()
    return [problem for code in code_of(path.read_text(encoding="utf-8"))
            for line in COMMAND.findall(code)
            if (problem := command_problem(line, root))]


CHECKS = {"links": problems_of_links, "paths": problems_of_paths,
          "modules": problems_of_modules, "commands": problems_of_commands}


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_what_the_docs_name_exists(doc, check):
    problems = CHECKS[check](doc)
    assert not problems, (f"{doc.relative_to(ROOT)} names what the tree lacks:\n  "
                          + "\n  ".join(problems))


@pytest.mark.parametrize("line, expected", [
    ("pbx build|up|down", None),
    ("import customers 客户.xlsx --county anji --commit", None),
    ("tasks distribute CAMPAIGN --mode average|auto [--managers E1,E2] [--commit]", None),
    ("pbx start", "no sub-command start"),
    ("hotline depart|leave", "no sub-command leave"),
    ("recordings purge --force", "no option --force"),
    ("hotline depart --file hr.csv --by admin --later", "no option --later"),
    ("frobnicate", "no sub-command frobnicate"),
])
def test_the_command_check_can_fail(line, expected):
    problem = command_problem(line, build_parser())
    assert (problem is None) if expected is None else (expected in problem)


def test_the_path_and_module_checks_can_fail(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("See `khhf/services/nothing.py`, `webui/access.py`,\n"
                   "`khhf.services.tasks.TRANSITIONS`, `khhf.services.tasks.no_such_thing`,\n"
                   "[gone](missing.md) and\n```sh\npython -m bench.nothing\n```\n",
                   encoding="utf-8")
    assert problems_of_paths(doc) == ["khhf/services/nothing.py: no such file or folder"]
    assert problems_of_modules(doc) == [
        "bench.nothing: no such module",
        "khhf.services.tasks.no_such_thing: khhf.services.tasks defines no no_such_thing"]
    assert problems_of_links(doc) == ["missing.md: no such file"]
