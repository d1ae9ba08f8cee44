"""The documentation against the program it describes.

docs/commands.md documents every flag of every `vtcaps` command, and nothing that the command
lacks: the flags are read from the `--help` text the command prints (not from the parsers'
internals) and from the docs' option rows (a backticked flag opening a table row or a list item
under `## vtcaps COMMAND`). README.md stays short, and no document narrates the project's history.
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from vtcaps_tf.errors import EXIT_STATUSES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS_MD = os.path.join(ROOT, "docs", "commands.md")
README = os.path.join(ROOT, "README.md")
README_MAX_LINES = 200
HISTORY_PHRASES = re.compile(r"used to|previously|no longer|renamed|before this", re.IGNORECASE)
HELP_FLAGS = {"-h", "--help"}

# Prints {"argv joined by spaces": help text} for each argv given as a JSON list of lists, each run
# through the dispatcher `vtcaps` itself calls (`--help` ends in SystemExit).
HELP_DRIVER = textwrap.dedent("""
    import contextlib, io, json, sys
    from vtcaps_tf.cli.main import main
    texts = {}
    for argv in json.loads(sys.argv[1]):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                main([*argv, "--help"])
            except SystemExit:
                pass
        texts[" ".join(argv)] = out.getvalue()
    print(json.dumps(texts))
""")

# An option line of argparse's help: two spaces, then the flag(s) and metavars, then two or more
# spaces before the help text (or the end of the line when the help goes on the next one).
_OPTION_LINE = re.compile(r"^  (-\S.*?)(?:\s{2,}|$)")
_FLAG = re.compile(r"^-{1,2}[A-Za-z0-9][\w-]*")
_COMMAND_LINE = re.compile(r"^    ([a-z][a-z-]*)(?:\s{2,}|$)")
_SUBCOMMANDS = re.compile(r"\{([\w,-]+)\} \.\.\.")
_SECTION = re.compile(r"^## (.+?)\s*$")
_CODE_SPAN = re.compile(r"`([^`]+)`")
_CELL_BORDER = re.compile(r"(?<!\\)\|")  # a `|` not escaped as `\|` (inside a cell's code span)


def help_texts(argvs: list[list[str]]) -> dict[str, str]:
    env = dict(os.environ, COLUMNS="200",  # one option a line: argparse wraps at the terminal width
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", HELP_DRIVER, json.dumps(argvs)], capture_output=True,
                          text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def flags_in_help(text: str) -> set[str]:
    flags = set()
    for line in text.splitlines():
        m = _OPTION_LINE.match(line)
        if m:
            for part in m.group(1).split(", "):
                flag = _FLAG.match(part.strip())
                if flag:
                    flags.add(flag.group(0))
    return flags - HELP_FLAGS


def commands_in_help(text: str) -> list[str]:
    """The COMMAND names `vtcaps --help` lists (indented four spaces under its positionals)."""
    return [m.group(1) for m in map(_COMMAND_LINE.match, text.splitlines()) if m]


def subcommands_in_help(text: str) -> list[str]:
    """A command with sub-commands (`vtcaps pipeline {run} ...`): their names."""
    usage = text.split("\n\n", 1)[0]
    m = _SUBCOMMANDS.search(usage)
    return m.group(1).split(",") if m else []


def documented_flags(markdown: str) -> dict[str, set[str]]:
    """Section title (`## TITLE`) -> the flags its option rows document: the backticked flags in
    the first cell of a table row, or the backticked flags opening a list item."""
    sections: dict[str, set[str]] = {}
    current = None
    in_code = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        heading = _SECTION.match(line)
        if heading:
            current = sections.setdefault(heading.group(1), set())
            continue
        if current is None:
            continue
        stripped = line.strip()
        if stripped.startswith("|"):
            spans = _CODE_SPAN.findall(_CELL_BORDER.split(stripped)[1])
        elif re.match(r"^[-*] `", stripped):
            lead = re.match(r"^[-*] ((?:`[^`]+`(?:,\s*|\s+or\s+|\s*/\s*)?)+)", stripped).group(1)
            spans = _CODE_SPAN.findall(lead)
        else:
            continue
        for span in spans:
            flag = _FLAG.match(span)
            if flag:
                current.add(flag.group(0))
    return sections


@pytest.fixture(scope="module")
def cli_help() -> dict[str, str]:
    """`vtcaps --help`, every command's and every sub-command's help text."""
    top = help_texts([[]])[""]
    commands = commands_in_help(top)
    texts = help_texts([[c] for c in commands])
    nested = [[c, s] for c in commands for s in subcommands_in_help(texts[c])]
    if nested:
        texts.update(help_texts(nested))
    return {"": top, **texts}


@pytest.fixture(scope="module")
def docs() -> dict[str, set[str]]:
    with open(COMMANDS_MD, encoding="utf-8") as f:
        return documented_flags(f.read())


def _command_flags(cli_help: dict[str, str], command: str) -> set[str]:
    """The flags of `command` and of its sub-commands."""
    return set().union(*(flags_in_help(text) for key, text in cli_help.items()
                         if key == command or key.startswith(command + " ")))


def test_help_parsing_reads_option_lines():
    text = ("usage: vtcaps x [-h] {run} ...\n\noptions:\n"
            "  -h, --help            show this help message and exit\n"
            "  --model-name NAME, --model_name NAME\n"
            "                        name in the URLs -1: none\n"
            "  --au-attention, --no-au-attention\n"
            "  -v, --verbose         log every request\n"
            "  --batch-size BATCH_SIZE  clips a call\n")
    assert flags_in_help(text) == {"--model-name", "--model_name", "--au-attention",
                                   "--no-au-attention", "-v", "--verbose", "--batch-size"}
    assert subcommands_in_help(text) == ["run"]
    md = ("## vtcaps x\n\n| flag | default |\n|---|---|\n| `--epochs N` | 500 |\n"
          "| `--model-name NAME`, `--model_name` | |\n| `--faces all\\|largest` | all |\n| 500 | `--not-a-row-flag` |\n"
          "- `-q`, `--quiet`: no progress\n- see `--not-a-list-flag`\n\n## other\n| `--z` | |\n")
    assert documented_flags(md) == {"vtcaps x": {"--epochs", "--model-name", "--model_name", "--faces",
                                                 "-q", "--quiet"}, "other": {"--z"}}


def test_every_command_has_a_section(cli_help, docs):
    commands = commands_in_help(cli_help[""])
    assert len(commands) >= 12, commands
    documented = {title.split()[1] for title in docs if re.fullmatch(r"vtcaps [a-z-]+", title)}
    assert documented == set(commands)


def test_global_options_are_documented(cli_help, docs):
    assert docs["Global options"] == flags_in_help(cli_help[""])


def test_every_documented_flag_is_in_the_help(cli_help, docs):
    for command in commands_in_help(cli_help[""]):
        unknown = docs[f"vtcaps {command}"] - _command_flags(cli_help, command)
        assert not unknown, f"docs/commands.md documents flags `vtcaps {command}` lacks: {sorted(unknown)}"


def test_every_flag_in_the_help_is_documented(cli_help, docs):
    for command in commands_in_help(cli_help[""]):
        flags = _command_flags(cli_help, command)
        assert flags, f"no flags read from `vtcaps {command} --help`"
        missing = flags - docs[f"vtcaps {command}"]
        assert not missing, f"`vtcaps {command}` flags missing from docs/commands.md: {sorted(missing)}"


def test_readme_is_short_and_shows_the_exit_statuses():
    with open(README, encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) <= README_MAX_LINES
    marker = lines.index("<!-- exit-status-table -->")
    table = []
    for line in lines[marker + 1:]:
        if not line.startswith("|"):
            break
        table.append(line)
    statuses = [cell.split("|")[1].strip() for cell in table[2:]]
    assert statuses == [str(status) for status, _ in EXIT_STATUSES]


def _documents():
    paths = [README, os.path.join(ROOT, "BUILD.md")]
    for dirpath, _, filenames in os.walk(os.path.join(ROOT, "docs")):
        paths += [os.path.join(dirpath, n) for n in sorted(filenames) if n.endswith(".md")]
    return paths


@pytest.mark.parametrize("path", _documents(), ids=lambda p: os.path.relpath(p, ROOT))
def test_documents_do_not_narrate_history(path):
    with open(path, encoding="utf-8") as f:
        hits = [f"{i}: {line.strip()}" for i, line in enumerate(f, 1) if HISTORY_PHRASES.search(line)]
    assert not hits, "\n".join(hits)
