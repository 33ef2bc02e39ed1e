"""The README and docs/*.md show only commands and config fields that exist, and their links lead
somewhere.

Commands are the lines of code blocks (indented or fenced) that start with `mmjax ` (after any
`VAR=value` environment prefix, or inside quotes, as in `sbatch --wrap "mmjax ..."`), with `\\`
continuations joined, and the inline code spans that start with `mmjax `. Each must name a
command of `mmjax.cli.COMMANDS` and give only the flags mmjax defines for it
(`mmjax.cli.COMMAND_HELP`), with values those flags parse; a code block's command must give
`--config` and `--workdir`, as the CLI requires. A `--config` that names a file must exist and
`get_config(ARG)` must load, and every `--config.a.b=VALUE` must name a field of that config
(`mmjax.cli.unknown_override`) and its value must parse (ml_collections' own flag parser).

Capitalised placeholders (NAME.py, DIR, N, VARIANT, ...) stand for any value: what they hide is
not checked, everything else is. A config file's placeholder argument (`av_mnist.py:VARIANT`)
loads its default `get_config()`; an override of a placeholder config (`NAME.py`) must still name
a trainer field (`mmjax.train.defaults.trainer_config`; below the parts every config file sets
itself, `model.encoders`, `model.fusion`, `model.heads`, `tasks`, `task_weighting`,
`dataset.options`, anything; `evals.KEY.FIELD` a field of some evaluator, `finetune.KEY.FIELD` a
field of `finetune_config`), or a sweep file's
field for `mmjax sweep`. The same holds for every `config.a.b` or `--config.a.b=...` named in an
inline code span of the prose, so that a renamed field cannot linger in a sentence either.
"""
import dataclasses
import glob
import os
import re
from typing import List, NamedTuple, Optional, Sequence, Tuple

import pytest
from absl import flags
from ml_collections import config_flags

from config_helpers import REPO
from mmjax import cli, evaluators
from mmjax.sweep import sweep_config
from mmjax.train.defaults import load_config, trainer_config
from mmjax.train.finetune import finetune_config

README = os.path.join(REPO, "README.md")
DOCS = sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))
PAGES = [README] + DOCS

FENCE = re.compile(r"^\s*(```|~~~)")
ENVIRONMENT = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*")
QUOTED = re.compile(r"""["'](mmjax\s[^"']*)["']""")
SPAN = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
PLACEHOLDER = re.compile(r"(?<![A-Za-z])[A-Z][A-Z0-9_]*(?![a-z])|\.\.\.|…")
MENTION = re.compile(r"^(?:--)?config\.([A-Za-z_<][\w.<>]*)")
HELP = ("--help", "-h", "-help", "help")


def is_placeholder(value: str) -> bool:
  """A value written as a placeholder: a capitalised word (DIR, N, NAME.py, runs/x_VARIANT,
  HOST:PORT) or `...`."""
  return bool(PLACEHOLDER.search(value))


# Reading the markdown.

class Page(NamedTuple):
  code: List[Tuple[int, str]]    # (line number, line) of code blocks, continuations joined
  prose: List[Tuple[int, str]]   # (line number, paragraph) outside code blocks


def read_page(path: str) -> Page:
  """The code lines and prose paragraphs of a markdown file. A code block is fenced, or indented
  by four spaces after a blank line."""
  blocks, prose = [], []
  block, paragraph, start = None, [], 0
  fenced = indented = False
  previous_blank = True

  def end_paragraph():
    nonlocal paragraph
    if paragraph:
      prose.append((start, "\n".join(paragraph)))
    paragraph = []

  with open(path, encoding="utf-8") as file:
    lines = file.read().split("\n")
  for number, line in enumerate(lines, 1):
    blank = not line.strip()
    if FENCE.match(line):
      end_paragraph()
      if fenced:
        blocks.append(block)
      else:
        block = []
      fenced, previous_blank = not fenced, False
      continue
    if fenced:
      block.append((number, line))
      continue
    if indented and not blank and not line.startswith("    "):
      blocks.append(block)
      indented = False
    if indented:
      block.append((number, line))
      continue
    if not blank and previous_blank and line.startswith("    "):
      end_paragraph()
      block, indented = [(number, line)], True
      continue
    if blank:
      end_paragraph()
    else:
      if not paragraph:
        start = number
      paragraph.append(line)
    previous_blank = blank
  end_paragraph()
  if block is not None and (fenced or indented):
    blocks.append(block)
  code = []
  for block in blocks:
    joined, first = "", None
    for number, line in block:
      if first is None:
        first = number
      if line.rstrip().endswith("\\"):
        joined += line.rstrip()[:-1] + " "
        continue
      code.append((first, joined + line))
      joined, first = "", None
    if first is not None:
      code.append((first, joined))
  return Page(code, prose)


def inline_spans(start: int, paragraph: str) -> List[Tuple[int, str]]:
  """`(line, span)` of the inline code spans of a paragraph starting at line `start`, line
  breaks as spaces."""
  return [(start + paragraph[:match.start()].count("\n"), " ".join(match.group(2).split()))
          for match in SPAN.finditer(paragraph)]


class Command(NamedTuple):
  page: str       # relative to the repository
  line: int
  text: str
  in_code: bool   # from a code block (a command to run as it stands), not an inline span


def commands_in(path: str) -> List[Command]:
  page, name = read_page(path), os.path.relpath(path, REPO)
  found = []
  for number, line in page.code:
    stripped = ENVIRONMENT.sub("", line.strip(), count=1)
    texts = [stripped] if stripped.startswith("mmjax ") else QUOTED.findall(line)
    found += [Command(name, number, " ".join(text.split()), True) for text in texts]
  for start, paragraph in page.prose:
    found += [Command(name, number, span, False) for number, span in inline_spans(start, paragraph)
              if span.startswith("mmjax ")]
  return found


def mentions_in(path: str) -> List[Tuple[str, int, str]]:
  """`(page, line, span)` of every `config.a.b` or `--config.a.b=...` named in an inline code
  span or at the start of a code line, outside a full `mmjax` command."""
  page, name = read_page(path), os.path.relpath(path, REPO)
  found = [(name, number, span) for start, paragraph in page.prose
           for number, span in inline_spans(start, paragraph) if MENTION.match(span)]
  found += [(name, number, line.strip()) for number, line in page.code
            if MENTION.match(line.strip())]
  return [m for m in found if not re.match(r"config\.(json|py)\b", m[2])]


COMMANDS = [command for page in PAGES for command in commands_in(page)]
MENTIONS = [mention for page in PAGES for mention in mentions_in(page)]


# Checking a command.

def tokens(command: str) -> List[str]:
  """The words of a command, without the brackets of optional parts and `|`."""
  words = []
  for word in command.split():
    while word.startswith("["):
      word = word[1:]
    while word.endswith("]") and word.count("]") > word.count("["):
      word = word[:-1]
    if word and word != "|":
      words.append(word)
  return words


TRAINER = trainer_config("")
SWEEP_FIELDS = tuple(sweep_config("", {}, ()).keys())
EVALUATOR_FIELDS = {"name"} | {field.name for evaluator in evaluators.EVALUATORS.values()
                               for field in dataclasses.fields(evaluator)}
FINETUNE_FIELDS = tuple(finetune_config())
# What each experiment config sets itself: below these, any field may exist.
OPEN = ("model.encoders", "model.fusion", "model.heads", "tasks", "task_weighting",
        "dataset.options")


def trainer_field_problem(path: str) -> Optional[str]:
  """Why `path` (`a.b.c`) can be no field of an experiment config, or None (module docstring)."""
  keys = path.split(".")
  if any(is_placeholder(key) or key.startswith("<") for key in keys):
    keys = keys[:next(i for i, key in enumerate(keys) if is_placeholder(key) or "<" in key)]
  if all(len(key) == 1 and key.islower() for key in keys):   # config.a.b, config.x.y
    return None
  if any(".".join(keys[:depth]) in OPEN for depth in range(1, len(keys) + 1)):
    return None
  if keys[:1] == ["finetune"] and len(keys) >= 2:   # keyed by the config's encoders
    return (None if len(keys) == 2 or len(keys) == 3 and keys[2] in FINETUNE_FIELDS else
            f"config.{path}: a finetune entry has no field {'.'.join(keys[2:])!r}; its fields "
            f"are {', '.join(FINETUNE_FIELDS)}")
  if keys[:1] == ["evals"] and len(keys) >= 2:   # a config file may add any key
    return (None if len(keys) == 2 or len(keys) == 3 and keys[2] in EVALUATOR_FIELDS else
            f"config.{path}: no evaluator has a field {'.'.join(keys[2:])!r}; their fields are "
            f"{', '.join(sorted(EVALUATOR_FIELDS))}")
  node, walked = TRAINER, []
  for key in keys:
    if not hasattr(node, "keys") or key not in node:
      where = "config." + ".".join(walked) if walked else "config"
      valid = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "none"
      return f"config.{path}: {where} has no field {key!r}; its fields are: {valid}"
    node, walked = node[key], walked + [key]
  return None


def sweep_field_problem(path: str) -> Optional[str]:
  """Why `path` can be no field of a sweep file's config, or None: a field of `sweep_config`,
  and below `fixed`, a trainer field."""
  first, _, rest = path.partition(".")
  if is_placeholder(first):
    return None
  if first not in SWEEP_FIELDS:
    return f"config.{path}: a sweep config has no field {first!r}; its fields are " + \
        ", ".join(SWEEP_FIELDS)
  if first == "fixed" and rest:
    problem = trainer_field_problem(rest)
    return problem and f"config.fixed.{problem[len('config.'):]}"
  return None


def parse_override(config: str, path: str, value: str) -> Optional[str]:
  """ml_collections' error parsing `--config=config --config.path=value`, or None."""
  argv = ["mmjax", f"--config={config}", f"--config.{path}={value}"]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=values, lock_config=True,
                                  sys_argv=argv)
  try:
    values(argv)
  except Exception as error:   # noqa: BLE001 (whatever the parser raises is the problem)
    return f"--config.{path}={value}: {type(error).__name__}: {' '.join(str(error).split())}"
  return None


def config_problems(command: str, config: str,
                    overrides: Sequence[Tuple[str, Optional[str]]]) -> List[str]:
  """The problems of `--config config` and the `(path, value)` overrides of it."""
  path, _, arg = config.partition(":")
  named = [(field, value) for field, value in overrides if not is_placeholder(field)]
  if is_placeholder(path):
    check = sweep_field_problem if command == "sweep" else trainer_field_problem
    return [problem for problem in (check(field) for field, _ in named) if problem]
  file = os.path.join(REPO, path)
  if not os.path.isfile(file):
    return [f"--config {config}: {path} is not a file"]
  if arg and is_placeholder(arg):
    arg = ""   # the file's default config stands for each of its variants
  try:
    load_config(file, arg or None)
  except Exception as error:   # noqa: BLE001
    return [f"--config {config}: get_config({arg!r}) raised {type(error).__name__}: {error}"]
  loaded = f"{file}:{arg}" if arg else file
  message = cli.unknown_override([f"--config={loaded}"] + [f"--config.{field}=0"
                                                           for field, _ in named])
  if message:
    return [message]
  return [problem for problem in (parse_override(loaded, field, value) for field, value in named
                                  if value is not None and not is_placeholder(value))
          if problem]


def command_problems(text: str, in_code: bool) -> List[str]:
  """Why `text` (`mmjax ...`) would not parse (module docstring); empty when it would."""
  words = tokens(text)[1:]
  if not words:
    return ["no command after `mmjax`"]
  command, rest = words[0], words[1:]
  if command in HELP:
    return [f"`mmjax {command}` takes nothing after it"] if rest else []
  if command == "COMMAND":
    return [] if rest and all(word in HELP for word in rest) else [
        "`mmjax COMMAND` stands for a command only before --help"]
  if command not in cli.COMMANDS:
    return [f"{command!r} is not a command; mmjax.cli.COMMANDS: {', '.join(cli.COMMANDS)}"]
  allowed = ("config", "workdir") + tuple(cli.COMMAND_HELP[command][2])
  problems, given, overrides, helped = [], {}, [], False
  index = 0
  while index < len(rest):
    word = rest[index]
    index += 1
    if word in ("...", "…"):   # more of the same: `[--config.FIELD=VALUE ...]`
      continue
    if not word.startswith("--"):
      problems.append(f"{word!r} is no flag's value (mmjax takes no positional arguments)")
      continue
    name, has_value, value = word[2:].partition("=")
    takes_next = index < len(rest) and not rest[index].startswith("--")
    if name.startswith("config."):
      if not has_value and takes_next:
        value, has_value, index = rest[index], True, index + 1
      overrides.append((name[len("config."):], value if has_value else None))
      continue
    if word in HELP or name in ("help", "h"):
      helped = True
      continue
    flag_name = name
    if name not in allowed and name[:2] == "no" and name[2:] in allowed:
      flag_name = name[2:]   # absl's --noFLAG for a boolean flag
    if flag_name not in allowed:
      problems.append(f"--{name} is not a flag of `mmjax {command}`; its flags: "
                      f"{', '.join('--' + f for f in allowed)}, --config.FIELD=VALUE")
      continue
    flag = flags.FLAGS[flag_name]
    if flag_name != name and not flag.boolean:
      problems.append(f"--{name}: --{flag_name} is not a boolean flag")
      continue
    if not has_value and not flag.boolean:
      if not takes_next:
        problems.append(f"--{name} needs a value")
        continue
      value, has_value, index = rest[index], True, index + 1
    if has_value and not is_placeholder(value) and flag_name != "config":   # (below)
      try:
        flag.parser.parse(value)
      except Exception as error:   # noqa: BLE001
        problems.append(f"--{name}={value}: {error}")
    given.setdefault(flag_name, []).append(value)
  if in_code and not helped:
    problems += [f"needs --{name} (mmjax {command} requires it)" for name in ("config", "workdir")
                 if name not in given]
  if given.get("config"):
    problems += config_problems(command, given["config"][-1], overrides)
  elif overrides:
    check = sweep_field_problem if command == "sweep" else trainer_field_problem
    problems += [p for p in (check(field) for field, _ in overrides) if p]
  return problems


# The tests.

def test_the_docs_show_enough_commands_to_check():
  """Bug caught: an extraction that finds nothing (or loses a kind of command) passes every
  parametrized test by having none."""
  in_code = [c for c in COMMANDS if c.in_code]
  assert len(COMMANDS) >= 10, COMMANDS
  assert len(in_code) >= 5 and len(COMMANDS) - len(in_code) >= 5
  assert any("\\" in open(os.path.join(REPO, c.page)).read().split("\n")[c.line - 1]
             for c in in_code), "no command with a \\ continuation was joined"
  assert {c.page for c in COMMANDS} >= {"README.md", "docs/configs_and_cli.md"}
  assert len(MENTIONS) >= 10, MENTIONS


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c.page}:{c.line}: {c.text}"
                                                   for c in COMMANDS])
def test_every_command_shown_parses(command):
  """Bugs caught: a command, flag or config field renamed in the code but not in the docs
  (`--config.eval_every_steps=100`, `--emap_ref 100`), a flag shown for a command that lacks it
  (`mmjax train --step 5`), a config file or argument that no longer exists, a value the flag
  cannot parse (`--config.total_steps=1e3`), a continuation line that was not joined."""
  problems = command_problems(command.text, command.in_code)
  assert not problems, f"{command.page}:{command.line}: {command.text}\n" + "\n".join(problems)


@pytest.mark.parametrize("mention", MENTIONS, ids=[f"{m[0]}:{m[1]}: {m[2]}" for m in MENTIONS])
def test_every_config_field_named_exists(mention):
  """Bug caught: a sentence still naming a removed field (`config.eval_splits`)."""
  page, line, span = mention
  path = MENTION.match(span).group(1).rstrip(".")
  first = path.split(".")[0]
  problem = (sweep_field_problem(path) if first in SWEEP_FIELDS and first not in TRAINER
             else trainer_field_problem(path))
  assert problem is None, f"{page}:{line}: `{span}`: {problem}"


def link_targets(path: str) -> List[Tuple[int, str]]:
  """`(line, target)` of every markdown link outside code (blocks and spans)."""
  found = []
  for number, paragraph in read_page(path).prose:
    found += [(number, target) for target in LINK.findall(SPAN.sub("", paragraph))]
  return found


def anchors(path: str) -> set:
  """GitHub's anchors of a markdown file's headings."""
  found, seen, fenced = set(), {}, False
  with open(path, encoding="utf-8") as file:
    for line in file:
      if FENCE.match(line):
        fenced = not fenced
      heading = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
      if heading:
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
        found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
  return found


@pytest.mark.parametrize("page", PAGES, ids=[os.path.relpath(p, REPO) for p in PAGES])
def test_every_relative_link_leads_to_a_file_and_heading(page):
  """Bugs caught: a link to a section that moved to docs/ (`#when-things-go-wrong`), a link
  from docs/ not made relative to it (`experiments/RESULTS.md` for `../experiments/...`)."""
  problems = []
  for line, target in link_targets(page):
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):   # https:, mailto:
      continue
    file, _, anchor = target.partition("#")
    resolved = os.path.normpath(os.path.join(os.path.dirname(page), file)) if file else page
    if not os.path.exists(resolved):
      problems.append(f"line {line}: {target}: {os.path.relpath(resolved, REPO)} does not exist")
    elif anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
      problems.append(f"line {line}: {target}: no heading #{anchor} in "
                      f"{os.path.relpath(resolved, REPO)}")
  assert not problems, "\n".join(problems)


def test_every_docs_page_is_linked_from_the_readme():
  """Bug caught: a page added to docs/ that no reader finds."""
  assert len(DOCS) >= 8
  linked = {os.path.normpath(os.path.join(REPO, target.partition("#")[0]))
            for _, target in link_targets(README)}
  missing = [os.path.relpath(page, REPO) for page in DOCS if page not in linked]
  assert not missing, f"README.md links none of {missing}"
