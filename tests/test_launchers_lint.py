"""No dead flags: every ``--flag`` a shell launcher passes is defined by the script it runs *and read*.

For every ``*.sh`` launcher of every example, each python command (``python [-u] path.py``,
``$LAUNCH path.py``, ``python -m package.module``; the flags of ``set -- ...`` lines belong to the
next command that passes ``"$@"``) is checked flag by flag against the script's import closure:
the script and every module of this repository it imports (its sibling modules and packages,
``common/``), parsed with ``ast``, so comments, docstrings and help texts never count.

(a) defined: an ``add_argument("--flag", ...)`` in the closure, a field of a ``@dataclass`` there,
    or -- when the closure uses paddlenlp's ``TrainingArguments`` -- one of its fields;
(b) read: the flag's ``dest`` is read as an attribute (``args.flag``, ``training_args.flag``,
    ``getattr(args, "flag")``) somewhere in the closure outside the argument checks (functions
    named ``parse_args`` / ``check_*``: a flag that is only range-checked does nothing).  A
    paddlenlp ``TrainingArguments`` field the example never reads counts as read only when
    paddlenlp's trainer reads it itself: ``args.<field>`` / ``self.args.<field>`` in
    ``paddlenlp/trainer/**.py`` or ``self.<field>`` in its ``training_args.py``.  (So
    ``--overwrite_output_dir``, which paddlenlp defines and never reads, is a dead flag.)

Script paths must resolve from any working directory: a relative path is accepted only after the
launcher ``cd``s to a folder derived from ``$0``.
"""
import ast
import dataclasses
import functools
import glob
import os
import re
import shlex

import pytest

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
LAUNCHERS = sorted(glob.glob(os.path.join(REPO_ROOT, "*", "*.sh")) + glob.glob(os.path.join(REPO_ROOT, "*", "*", "*.sh")))
DISTRIBUTED_LAUNCH = "paddle.distributed.launch"  # its own flags (--nproc_per_node, --gpus, ...) come before the script
CHECK_FUNCTION = re.compile(r"^(parse_args|_?check(_\w+)?)$")  # argument validation only: reads there do not count


# ------------------------------------------------------------------------------ shell parsing
def _logical_lines(text):
    """The launcher's lines with backslash continuations joined."""
    return re.sub(r"\\\n", " ", text).splitlines()


def _tokens(line):
    try:
        return shlex.split(line, comments=True)
    except ValueError:  # unbalanced quotes: fall back to a plain split without the comment
        return line.split(" #", 1)[0].split()


class _ShellState:
    """Working directory and path variables (``HERE=$(cd "$(dirname "$0")" && pwd)``, ``ROOT=$(pwd)``,
    ``ROOT=$(dirname "$HERE")``) as far as they derive from ``$0``; ``cwd`` is None until a ``cd``."""

    def __init__(self, launcher):
        self.launcher_dir = os.path.dirname(os.path.abspath(launcher))
        self.cwd = None
        self.vars = {}

    def expand(self, text):
        """``text`` with ``$(dirname "$0")``, ``$(pwd)``, ``$(dirname "$V")`` and known ``$V``/``${V}`` replaced."""
        text = re.sub(r"""\$\(dirname\s+["']?\$0["']?\)""", self.launcher_dir, text)
        if self.cwd is not None:
            text = text.replace("$(pwd)", self.cwd).replace("$PWD", self.cwd)
        text = re.sub(r"""\$\(dirname\s+["']?\$\{?(\w+)\}?["']?\)""",
                      lambda m: os.path.dirname(self.vars[m.group(1)]) if m.group(1) in self.vars else m.group(0), text)
        return re.sub(r"\$\{?(\w+)\}?", lambda m: self.vars.get(m.group(1), m.group(0)), text)

    def absolute(self, path):
        """``path`` made absolute against the tracked working directory (None if unknown)."""
        if os.path.isabs(path):
            return os.path.normpath(path)
        return os.path.normpath(os.path.join(self.cwd, path)) if self.cwd is not None else None

    def update(self, line):
        """Follow ``cd <dir>`` and ``NAME=<path expression>`` lines (quotes dropped: these paths hold no spaces)."""
        line = line.split(" #", 1)[0].replace('"', "").replace("'", "").strip()
        m = re.match(r"^cd\s+(.+)$", line)
        if m:
            target = self.expand(m.group(1))
            if "$" not in target:
                self.cwd = self.absolute(target) if self.cwd is not None or os.path.isabs(target) else None
            return
        m = re.match(r"^(\w+)=\$\(cd\s+(.+?)\s*&&\s*pwd\)$", line)
        if m:
            target = self.expand(m.group(2))
            if "$" not in target:
                self.vars[m.group(1)] = os.path.normpath(target if os.path.isabs(target) else os.path.join(self.cwd or self.launcher_dir, target))
            return
        m = re.match(r"^(\w+)=(\$\((?:pwd|dirname\s+[^)]+)\))$", line)
        if m:
            value = self.expand(m.group(2))
            if "$" not in value:
                self.vars[m.group(1)] = os.path.normpath(value)


def _split_commands(tokens):
    """A line's tokens cut into one list per shell command (at ``&&``, ``||``, ``;``, ``|``)."""
    parts, current = [], []
    for tok in tokens:
        if tok in ("&&", "||", ";", "|"):
            parts.append(current)
            current = []
        else:
            current.append(tok)
    return parts + [current]


def _find_target(part, repo_root):
    """``(kind, target, rest)`` of one shell command: ``("py", path, rest)`` for a python script
    (``python -m a.b`` -> ``<repo>/a/b.py``), ``("sh", path, rest)`` for another launcher
    (``sh x.sh`` / ``exec sh x.sh``), else ``(None, None, [])``."""
    for i, tok in enumerate(part):
        if tok == "-m" and i + 1 < len(part) and part[i + 1] != DISTRIBUTED_LAUNCH and not part[i + 1].startswith("-"):
            return "py", os.path.join(repo_root, *part[i + 1].split(".")) + ".py", part[i + 2:]
        if "=" in tok:
            continue
        if tok.endswith(".py"):
            return "py", tok, part[i + 1:]
        if tok.endswith(".sh") and i > 0 and part[i - 1] in ("sh", "bash"):
            return "sh", tok, part[i + 1:]
    return None, None, []


def _flags(tokens):
    return [t.split("=", 1)[0][2:] for t in tokens if t.startswith("--") and len(t) > 2]


def launcher_commands(launcher, passed=(), _seen=()):
    """``[(script_path or None, shown_name, [flags], problem or None)]`` for every python command of
    ``launcher`` (``script_path`` absolute).  ``passed``: flags a calling launcher hands over as
    ``"$@"`` (they go to the commands that pass ``"$@"`` on).  A command ``sh other.sh --flag ...``
    contributes ``other.sh``'s commands that receive those flags, with just those flags."""
    with open(launcher, encoding="utf-8") as f:
        text = f.read()
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(launcher)))
    state = _ShellState(launcher)
    pending = []  # flags of `set -- ...` lines, prepended to "$@"
    found = []
    for line in _logical_lines(text):
        state.update(line)
        tokens = _tokens(line)
        if tokens[:2] == ["set", "--"]:
            pending = _flags(tokens[2:]) + pending
            continue
        for part in _split_commands(tokens):
            kind, target, rest = _find_target(part, repo_root)
            if kind is None:
                continue
            flags = _flags(rest)
            if "$@" in rest:
                flags, pending = pending + flags + list(passed), []
            shown = os.path.relpath(target, repo_root) if os.path.isabs(target) else target
            expanded = state.expand(target)
            path = None if "$" in expanded else state.absolute(expanded)
            if "$" in expanded:
                problem = f"{target}: cannot tell which script this is (unresolved variable)"
            elif path is None:
                problem = f"{target}: a relative path before any `cd`: the launcher works only from one working directory"
            elif not os.path.isfile(path):
                problem = f"{target}: no such {'script' if kind == 'py' else 'launcher'} ({path})"
            else:
                problem = None
            if problem:
                found.append((None, shown, flags, problem))
            elif kind == "py":
                found.append((path, os.path.relpath(path, repo_root), flags, None))
            elif flags and path not in _seen:  # another launcher: only its commands that receive these flags
                inner = launcher_commands(path, passed=flags, _seen=tuple(_seen) + (os.path.abspath(launcher),))
                found += [(p, n, [f for f in fl if f in flags], pr) for p, n, fl, pr in inner if pr is None and set(flags) & set(fl)]
    return found


# ------------------------------------------------------------------------------ python analysis
def _resolve_module(name, search_dirs):
    for d in search_dirs:
        base = os.path.join(d, *name.split("."))
        if os.path.isfile(base + ".py"):
            return base + ".py"
        if os.path.isfile(os.path.join(base, "__init__.py")):
            return os.path.join(base, "__init__.py")
    return None


def import_closure(script, repo_root=REPO_ROOT):
    """``{path: ast.Module}`` of ``script`` and every module under ``repo_root`` it imports, transitively.

    Searched like the entry scripts' ``sys.path``: the script's folder, the repo root (for
    ``common/``) and the example folder; relative imports against the importing package.
    """
    script = os.path.abspath(script)
    example_dir = os.path.join(repo_root, os.path.relpath(script, repo_root).split(os.sep)[0])
    search = [os.path.dirname(script), repo_root, example_dir]
    seen, todo = {}, [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
        seen[path] = tree
        names = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    names += [(".".join(parts[:k]), search) for k in range(1, len(parts) + 1)]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = os.path.dirname(path)
                    for _ in range(node.level - 1):
                        base = os.path.dirname(base)
                    dirs = [base]
                else:
                    dirs = search
                if node.module:
                    parts = node.module.split(".")
                    names += [(".".join(parts[:k]), dirs) for k in range(1, len(parts) + 1)]
                    names += [(f"{node.module}.{alias.name}", dirs) for alias in node.names]
                else:
                    names += [(alias.name, dirs) for alias in node.names]
        for name, dirs in names:
            found = _resolve_module(name, dirs)
            if found and os.path.abspath(found).startswith(repo_root + os.sep) and f"{os.sep}tests{os.sep}" not in found:
                todo.append(os.path.abspath(found))
    return seen


def _is_dataclass(node):
    return any("dataclass" in ast.unparse(d) for d in node.decorator_list)


class _Reads(ast.NodeVisitor):
    """Attribute names read outside argument-check functions, and ``getattr(x, "name")`` names."""

    def __init__(self):
        self.names, self.checked_only, self._stack = set(), set(), []

    def _in_check(self):
        return any(CHECK_FUNCTION.match(name) for name in self._stack)

    def visit_FunctionDef(self, node):
        self._stack.append(node.name)
        self.generic_visit(node)
        self._stack.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def _read(self, name):
        (self.checked_only if self._in_check() else self.names).add(name)

    def visit_Attribute(self, node):
        if isinstance(node.ctx, ast.Load):
            self._read(node.attr)
        self.generic_visit(node)

    def visit_Call(self, node):
        if isinstance(node.func, ast.Name) and node.func.id == "getattr" and len(node.args) >= 2 \
                and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
            self._read(node.args[1].value)
        self.generic_visit(node)


def script_interface(script, repo_root=REPO_ROOT):
    """What the closure of ``script`` defines and reads.

    Returns ``{"options": {"--flag": dest}, "dataclass_fields": set, "uses_training_arguments": bool,
    "reads": set, "checked_only": set}``.
    """
    options, fields, uses_ta = {}, set(), False
    reads = _Reads()
    for tree in import_closure(script, repo_root).values():
        reads.visit(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
                opts = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith("-")]
                longs = [o for o in opts if o.startswith("--")]
                if not longs:
                    continue
                dest = next((k.value.value for k in node.keywords if k.arg == "dest" and isinstance(k.value, ast.Constant)), None)
                dest = dest or longs[0][2:].replace("-", "_")
                boolean_optional = any(k.arg == "action" and "BooleanOptionalAction" in ast.unparse(k.value) for k in node.keywords)
                for o in longs:
                    options[o] = dest
                    if boolean_optional:
                        options["--no-" + o[2:]] = dest
            elif isinstance(node, ast.ClassDef) and _is_dataclass(node):
                fields |= {s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
            elif isinstance(node, (ast.Name, ast.Attribute)) and (getattr(node, "id", None) or getattr(node, "attr", None)) == "TrainingArguments":
                uses_ta = True
    return {"options": options, "dataclass_fields": fields, "uses_training_arguments": uses_ta, "reads": reads.names, "checked_only": reads.checked_only - reads.names}


@functools.lru_cache(maxsize=None)
def paddlenlp_training_fields():
    """``(fields of paddlenlp's TrainingArguments, the fields paddlenlp's trainer itself reads)``."""
    import paddlenlp.trainer as trainer_pkg
    from paddlenlp.trainer import TrainingArguments

    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    read = set()
    root = os.path.dirname(trainer_pkg.__file__)
    for path in glob.glob(os.path.join(root, "**", "*.py"), recursive=True):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        read |= set(re.findall(r"\bargs\.(\w+)", text))
        if os.path.basename(path) == "training_args.py":
            read |= set(re.findall(r"\bself\.(\w+)", text))
    return fields, read & fields


def flag_problems(script, flags, repo_root=REPO_ROOT):
    """The problems of passing ``flags`` (names without ``--``) to ``script``: one message per flag
    that the script does not define or never reads."""
    info = script_interface(script, repo_root)
    ta_fields, ta_read = paddlenlp_training_fields() if info["uses_training_arguments"] else (set(), set())
    shown = os.path.relpath(script, repo_root)
    problems = []
    for flag in flags:
        dest = info["options"].get("--" + flag)
        if dest is None and flag in info["dataclass_fields"] | ta_fields:
            dest = flag
        if dest is None:
            problems.append(f"{shown}: --{flag} is not defined by its parser")
        elif dest in info["reads"] or dest in ta_read:
            continue
        elif dest in info["checked_only"]:
            problems.append(f"{shown}: --{flag} is only range-checked, never used")
        elif dest in ta_fields:
            problems.append(f"{shown}: --{flag} is a paddlenlp TrainingArguments field that neither paddlenlp's trainer nor the script reads")
        else:
            problems.append(f"{shown}: --{flag} is defined but never read")
    return problems


def launcher_problems(launcher):
    """Every problem of ``launcher``: unresolvable / missing scripts and dead or undefined flags."""
    problems = []
    for path, shown, flags, problem in launcher_commands(launcher):
        if problem:
            problems.append(problem)
        else:
            problems += flag_problems(path, flags, os.path.dirname(os.path.dirname(os.path.abspath(launcher))))
    return problems


# ------------------------------------------------------------------------------ the tests
@pytest.mark.parametrize("launcher", LAUNCHERS, ids=lambda p: os.path.relpath(p, REPO_ROOT))
def test_launcher_flags_are_defined_and_read(launcher):
    problems = launcher_problems(launcher)
    assert not problems, f"{os.path.relpath(launcher, REPO_ROOT)}:\n" + "\n".join(problems)


FAKE_SCRIPT = '''
import argparse
import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # noqa
from dataclasses import dataclass, field
from helper import use_steps


def parse_args(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--used", type=int)
    p.add_argument("--steps", type=int)  # read in the sibling module
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--dead", type=int, help="args.dead is mentioned here only")  # never read
    p.add_argument("--only_checked", type=int)
    args = p.parse_args(argv)
    if args.only_checked is not None and args.only_checked < 0:
        p.error("--only_checked must be >= 0")
    return args


def main():
    args = parse_args()
    # args.dead in a comment does not count
    print(args.used, use_steps(args), getattr(args, "flip"))


if __name__ == "__main__":
    main()
'''
FAKE_TRAINER_SCRIPT = '''
from dataclasses import dataclass, field
from paddlenlp.trainer import PdArgumentParser, TrainingArguments


@dataclass
class ModelArguments:
    config_file: str = field(default="x.json")
    unused_field: int = field(default=0)


def main():
    model_args, training_args = PdArgumentParser((ModelArguments, TrainingArguments)).parse_args_into_dataclasses()
    print(model_args.config_file, training_args.seed)
'''


def test_the_checker_catches_dead_and_undefined_flags(tmp_path):
    """The checker itself: on a fake example it reports exactly the dead, check-only and undefined
    flags, including paddlenlp's never-read ``--overwrite_output_dir`` and a ``set --`` flag."""
    ex = tmp_path / "example"
    ex.mkdir()
    (ex / "train.py").write_text(FAKE_SCRIPT)
    (ex / "helper.py").write_text("def use_steps(args):\n    return args.steps * 2\n")
    (ex / "train_trainer.py").write_text(FAKE_TRAINER_SCRIPT)
    (ex / "run.sh").write_text(
        '#!/bin/sh\nset -e\ncd "$(dirname "$0")/.."\nset -- --only_checked 1 "$@"\n'
        'python example/train.py --used 1 --steps 2 --no-flip --dead 3 --typo 4 "$@"  # --not_a_flag in a comment\n'
        'HERE=$(cd "$(dirname "$0")" && pwd)\n'
        '$LAUNCH "$HERE/train_trainer.py" \\\n  --config_file c.json --unused_field 1 --seed 3 --output_dir o --overwrite_output_dir\n'
        'python example/missing.py --x 1\n')
    problems = launcher_problems(str(ex / "run.sh"))
    assert sorted(problems) == sorted([
        "example/train.py: --dead is defined but never read",
        "example/train.py: --typo is not defined by its parser",
        "example/train.py: --only_checked is only range-checked, never used",
        "example/train_trainer.py: --unused_field is defined but never read",
        "example/train_trainer.py: --overwrite_output_dir is a paddlenlp TrainingArguments field that neither paddlenlp's trainer nor the script reads",
        f"example/missing.py: no such script ({ex / 'missing.py'})",
    ]), problems
    # a launcher handing flags on to another one (`exec sh other.sh --flag "$@"`): checked against the script they reach
    (ex / "wrap.sh").write_text('#!/bin/sh\nHERE=$(cd "$(dirname "$0")" && pwd)\nexec sh "$HERE/run.sh" --used 5 --bogus 1 "$@"\n')
    assert launcher_problems(str(ex / "wrap.sh")) == ["example/train.py: --bogus is not defined by its parser"]
    # a launcher without `cd` runs its relative script path only from one directory
    (ex / "nocd.sh").write_text("#!/bin/sh\npython example/train.py --used 1\n")
    assert launcher_problems(str(ex / "nocd.sh")) == ["example/train.py: a relative path before any `cd`: the launcher works only from one working directory"]


def _resolve(env):
    """Source common/launch.sh as a launcher does and return (status, "BF16|FP16|MIXED_PRECISION|LAUNCH", stderr)."""
    import subprocess

    clean = {k: v for k, v in os.environ.items() if k not in ("USE_AMP", "AMP_DTYPE", "NPROC", "NNODES", "MASTER", "IPS", "GPUS", "OUTPUT_DIR")}
    proc = subprocess.run(["sh", "-c", '. common/launch.sh; resolve_amp; resolve_launch; echo "$BF16|$FP16|$MIXED_PRECISION|$LAUNCH"'],
                          cwd=REPO_ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=30)
    return proc.returncode, proc.stdout.strip(), proc.stderr


@pytest.mark.parametrize("env, expected", [
    ({}, "False|False|no|python -u"),
    ({"NPROC": "1", "USE_AMP": "1"}, "True|False|bf16|python -u"),
    ({"NPROC": "2", "USE_AMP": "1", "AMP_DTYPE": "fp16", "OUTPUT_DIR": "out"},
     "False|True|fp16|python -u -m paddle.distributed.launch --nproc_per_node 2 --log_dir out/launch_logs"),
    ({"NPROC": "8", "NNODES": "2", "MASTER": "10.0.0.1:8080", "OUTPUT_DIR": "o"},
     "False|False|no|python -u -m paddle.distributed.launch --nproc_per_node 8 --log_dir o/launch_logs --nnodes 2 --master 10.0.0.1:8080"),
    ({"NPROC": "1", "IPS": "10.0.0.1,10.0.0.2", "OUTPUT_DIR": "o"},
     "False|False|no|python -u -m paddle.distributed.launch --nproc_per_node 1 --log_dir o/launch_logs --ips 10.0.0.1,10.0.0.2"),
    ({"NPROC": "1", "IPS": "127.0.0.1"}, "False|False|no|python -u"),  # one node, one process: plain python
    ({"GPUS": "0,1", "OUTPUT_DIR": "o"}, "False|False|no|python -u -m paddle.distributed.launch --gpus 0,1 --log_dir o/launch_logs"),
])
def test_shared_launch_knobs_mean_one_thing(env, expected):
    """common/launch.sh turns the shared knobs into the same AMP flags and launch command for every launcher."""
    status, out, err = _resolve(env)
    assert status == 0, err
    assert out == expected


@pytest.mark.parametrize("env", [{"USE_AMP": "yes"}, {"USE_AMP": "1", "AMP_DTYPE": "fp8"}])
def test_shared_launch_rejects_unknown_amp_values(env):
    status, out, err = _resolve(env)
    assert status == 2 and out == ""
    assert "USE_AMP must be 0 or 1 and AMP_DTYPE bf16 or fp16" in err


def test_every_training_launcher_uses_the_shared_launch_helpers():
    """No launcher builds its own launch command or AMP flags: each sources common/launch.sh (or wraps one that does)."""
    for path in LAUNCHERS:
        rel = os.path.relpath(path, REPO_ROOT)
        if rel == os.path.join("common", "launch.sh"):
            continue
        text = "\n".join(line.split("#", 1)[0] for line in open(path).read().splitlines())
        assert "LAUNCH=" not in text and 'case "$USE_AMP' not in text, f"{rel} builds its own launch command or AMP flags"
        if "$LAUNCH" in text:
            assert "common/launch.sh" in open(path).read() and "resolve_launch" in text, f"{rel} uses $LAUNCH without common/launch.sh"
