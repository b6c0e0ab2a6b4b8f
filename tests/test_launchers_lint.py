"""Every ``--flag`` a shell launcher passes must be defined by the script it calls and read there
(no dead flags), and every python script a launcher names must exist."""
import dataclasses
import glob
import os
import re
import shlex

import pytest

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
LAUNCHERS = sorted(glob.glob(os.path.join(REPO_ROOT, "*", "*.sh")) + glob.glob(os.path.join(REPO_ROOT, "*", "*", "*.sh")))


def _commands(text):
    """Yield (script.py, [flags]) for each python command in a shell script."""
    joined = re.sub(r"\\\n", " ", text)
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line.startswith("#") or ".py" not in line:
            continue
        try:
            tokens = shlex.split(line)
        except ValueError:
            tokens = line.split()
        for i, tok in enumerate(tokens):
            if tok.endswith(".py"):
                flags = [t.split("=", 1)[0][2:] for t in tokens[i + 1 :] if t.startswith("--")]
                yield tok, flags
                break


def _trainer_fields():
    try:
        from paddlenlp.trainer import TrainingArguments
    except Exception:  # pragma: no cover - paddlenlp is in requirements
        return set()
    return {f.name for f in dataclasses.fields(TrainingArguments)}


def _script_sources(script_path):
    """Text of the script and of the python modules in its folder tree (its local imports)."""
    folder = os.path.dirname(script_path)
    example_root = folder
    while os.path.dirname(example_root) != REPO_ROOT and example_root != REPO_ROOT:
        example_root = os.path.dirname(example_root)
    texts = {}
    for path in glob.glob(os.path.join(example_root, "**", "*.py"), recursive=True):
        with open(path, encoding="utf-8") as f:
            texts[path] = f.read()
    return texts


def _resolve_script(launcher, script):
    for base in (REPO_ROOT, os.path.dirname(launcher)):
        path = os.path.normpath(os.path.join(base, script))
        if os.path.isfile(path):
            return path
    return None


@pytest.mark.parametrize("launcher", LAUNCHERS, ids=lambda p: os.path.relpath(p, REPO_ROOT))
def test_launcher_flags_are_defined_and_read(launcher):
    with open(launcher, encoding="utf-8") as f:
        text = f.read()
    trainer_fields = None
    problems = []
    for script, flags in _commands(text):
        if "$" in script:
            continue  # script chosen by a variable: checked where the variable is set
        path = _resolve_script(launcher, script)
        if path is None:
            problems.append(f"{script}: no such script")
            continue
        sources = _script_sources(path)
        own = sources[path]
        everything = "\n".join(sources.values())
        for flag in flags:
            if flag in ("nproc_per_node", "log_dir", "gpus", "devices", "ips", "master", "nnodes"):
                continue  # paddle.distributed.launch's own flags
            defined = f'"--{flag}"' in everything or f"'--{flag}'" in everything or re.search(rf"^\s+{flag}\s*:", everything, re.M)
            if not defined:
                trainer_fields = _trainer_fields() if trainer_fields is None else trainer_fields
                defined = flag in trainer_fields
                if defined:
                    continue  # paddlenlp TrainingArguments: defined and consumed by the Trainer
            if not defined:
                problems.append(f"{script}: --{flag} is not defined")
                continue
            if not re.search(rf"\.{flag}\b", everything) and not re.search(rf"[\"']{flag}[\"']", everything):
                problems.append(f"{script}: --{flag} is defined but never read")
        assert own  # the script itself was read
    assert not problems, f"{os.path.relpath(launcher, REPO_ROOT)}:\n" + "\n".join(problems)


def test_there_are_launchers():
    assert any(p.endswith("run_train_ddpm.sh") for p in LAUNCHERS)
