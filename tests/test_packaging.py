"""`pip install symopt` is the optimizer and the training loop; each extra adds what it names,
and a command of a missing extra says which to install (pyproject.toml, symopt_core/extras.py)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

from service.testing import ROOT, one_thread_env
from symopt_core.extras import EXTRA_OF

from .specs import CORPUS_BYTES
from .waiting import LIMIT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# The distribution that brings each optional top-level module, where the names differ.
DISTRIBUTION = {
    "pydantic_settings": "pydantic-settings",
    "prometheus_client": "prometheus-client",
    "ray": "ray[train]",
    "uvicorn": "uvicorn[standard]",
    "psycopg": "psycopg[binary]",
}


def requirement_names(requirements: list[str]) -> set[str]:
    """The names of requirements, extras kept: "ray[train]>=2.40" -> "ray[train]"."""
    found = (re.match(r"[A-Za-z0-9_.\-]+(\[[^\]]*\])?", requirement) for requirement in requirements)
    return {match.group(0) for match in found if match}


def extra_closure(extra: str) -> set[str]:
    """Every requirement an extra brings, through the extras it names (symopt[...])."""
    names: set[str] = set()
    for name in requirement_names(PROJECT["optional-dependencies"][extra]):
        nested = re.fullmatch(r"symopt\[(.+)\]", name)
        if nested:
            for inner in nested.group(1).split(","):
                names |= extra_closure(inner)
        else:
            names.add(name)
    return names


def test_the_core_requires_no_package_of_an_extra_and_each_extra_brings_its_own():
    core = requirement_names(PROJECT["dependencies"])
    for module, extra in EXTRA_OF.items():
        distribution = DISTRIBUTION.get(module, module)
        assert distribution not in core, f"{distribution} is a core dependency but belongs to [{extra}]"
        assert distribution in extra_closure(extra), f"{distribution} is missing from [{extra}]"
    assert (
        extra_closure("all") >= extra_closure("service") >= extra_closure("worker") | extra_closure("client")
    )
    assert "symopt[all]" in PROJECT["optional-dependencies"]["dev"]


def symopt_without_extras(*args: str, home: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "tests" / "without_extras.py"), *args],
        cwd=home,
        env=one_thread_env(SYMOPT_HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=LIMIT,
    )


def test_symopt_train_runs_without_any_extra_and_other_commands_name_theirs(tmp_path):
    trained = symopt_without_extras(
        "train",
        str(ROOT / "examples" / "quickstart.yaml"),
        "--set",
        "steps=4",
        "--set",
        "data.corpus=pystdlib",
        "--set",
        f"data.options={{max_bytes: {CORPUS_BYTES}}}",
        "--set",
        "eval.every=2",
        home=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr
    assert re.search(r"^val_loss=\d+\.\d+$", trained.stdout, re.MULTILINE), trained.stdout
    assert "no loss.png (matplotlib: pip install 'symopt[client]')" in trained.stderr
    listed = symopt_without_extras("jobs", "list", home=tmp_path)
    assert listed.returncode == 2
    assert "symopt jobs: needs the httpx package" in listed.stderr
    assert "pip install 'symopt[client]'" in listed.stderr
    served = symopt_without_extras("serve", home=tmp_path)
    assert served.returncode == 2
    assert "pip install 'symopt[service]'" in served.stderr


def test_a_transformers_model_without_the_hf_extra_names_it(tmp_path):
    spec = tmp_path / "hf.yaml"
    spec.write_text(
        "model: {family: hf, config: {model_type: llama, hidden_size: 32, intermediate_size: 64, "
        "num_hidden_layers: 1, num_attention_heads: 2}}\n"
        f"data: {{corpus: pystdlib, options: {{max_bytes: {CORPUS_BYTES}}}}}\nsteps: 2\n"
    )
    done = symopt_without_extras("train", str(spec), home=tmp_path)
    assert done.returncode == 2, done.stdout
    assert "needs the transformers package" in done.stderr
    assert "pip install 'symopt[hf]'" in done.stderr
