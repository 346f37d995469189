"""The `symopt` command line, run as a user runs it (a real subprocess)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.testing import one_thread_env

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def symopt(*args: str, data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = one_thread_env(**({"SYMOPT_DATA_DIR": str(data_dir)} if data_dir is not None else {}))
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def test_train_with_overrides_prints_val_loss_last_and_writes_the_run(tmp_path, data_dir):
    run = tmp_path / "run"
    done = symopt(
        "train",
        "examples/shakespeare_char_cpu.yaml",
        "--set",
        "optimizer.preset=muon",
        "--set",
        "optimizer.lr=0.02",
        "--set",
        "steps=30",
        "--set",
        "eval.every=15",
        "--set",
        "data.corpus=pystdlib",
        "--run-dir",
        str(run),
        "--quiet",
        data_dir=data_dir,
    )
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("val_loss=")
    assert float(last.split("=")[1]) < 6.0
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {e["kind"] for e in events} >= {"status", "metrics", "eval", "checkpoint", "result"}
    assert json.loads((run / "spec.json").read_text())["optimizer"]["preset"] == "muon"
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "checkpoints" / "step_000000030.pt").is_file()


def test_train_shows_a_progress_bar_with_steps_loss_and_tokens_per_second(tmp_path, data_dir):
    done = symopt(
        "train",
        "examples/qwen3_tiny_cpu.yaml",
        "--set",
        "steps=12",
        "--set",
        "log_every=4",
        "--set",
        "eval.every=12",
        "--run-dir",
        str(tmp_path / "run"),
        data_dir=data_dir,
    )
    assert done.returncode == 0, done.stderr
    # tqdm redraws the bar with carriage returns on stderr; the last frame is the finished bar.
    frames = [frame for frame in re.split(r"[\r\n]+", done.stderr) if "step" in frame]
    assert frames, done.stderr
    final = frames[-1]
    assert re.search(r"\b12/12\b", final), final
    loss = re.search(r"loss=(\d+\.\d{4})", final)
    assert loss is not None, final
    assert 0.0 < float(loss.group(1)) < 10.0
    speed = re.search(r"tok/s=(\d+)", final)
    assert speed is not None, final
    assert int(speed.group(1)) > 0
    assert re.search(r"\b4/12\b", done.stderr)  # it advanced with the metrics events, not only at the end
    assert done.stdout.strip().splitlines()[-1].startswith("val_loss=")  # the bar stays off stdout


def test_resume_from_a_run_directory_continues(tmp_path, data_dir):
    run = tmp_path / "run"
    first = symopt(
        "train",
        "examples/qwen3_tiny_cpu.yaml",
        "--set",
        "steps=10",
        "--set",
        "eval.every=5",
        "--run-dir",
        str(run),
        "--quiet",
        data_dir=data_dir,
    )
    assert first.returncode == 0, first.stderr
    more = symopt(
        "train",
        "examples/qwen3_tiny_cpu.yaml",
        "--set",
        "steps=20",
        "--set",
        "eval.every=5",
        "--resume",
        str(run / "checkpoints"),
        "--run-dir",
        str(run),
        "--quiet",
        data_dir=data_dir,
    )
    assert more.returncode == 0, more.stderr
    assert "steps=20 " in more.stdout


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["--set", "optimizer.preset=lion"], "unknown preset 'lion'"),
        (["--set", "model.layers=3"], "Unknown dim(s) 'layers'"),
        (["--set", "steps"], "Invalid --set 'steps': expected KEY=VALUE"),
        (["--set", "data.corpus=nowhere"], "Unknown corpus"),
    ],
)
def test_bad_settings_exit_2_with_a_message(settings, message, tmp_path, data_dir):
    done = symopt(
        "train",
        "examples/quickstart.yaml",
        *settings,
        "--run-dir",
        str(tmp_path),
        "--quiet",
        data_dir=data_dir,
    )
    assert done.returncode == 2
    assert message.lower() in done.stderr.lower()
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["models", "presets", "rules"])
def test_listings(command):
    done = symopt(command)
    assert done.returncode == 0
    expected = {"models": "gpt-oss", "presets": "sf-symmetric", "rules": "centered_left_spectral"}[command]
    assert expected in done.stdout


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_every_example_is_a_valid_spec(example):
    from symopt_core.spec import load_spec

    spec = load_spec(example)
    assert spec.steps > 0


@pytest.mark.parametrize(
    "example", sorted((ROOT / "examples" / "studies").glob("*.yaml")), ids=lambda p: p.stem
)
def test_every_study_example_is_a_valid_study(example):
    from service.study_spec import StudySpec

    spec = StudySpec.model_validate(yaml.safe_load(example.read_text()))
    assert len(spec.candidates) >= 2


@pytest.mark.parametrize(
    "example", sorted((ROOT / "examples" / "sweeps").glob("*.yaml")), ids=lambda p: p.stem
)
def test_every_sweep_example_is_a_valid_sweep(example):
    from service.sweep_spec import SweepSpec

    spec = SweepSpec.model_validate(yaml.safe_load(example.read_text()))
    assert spec.n_trials >= 1
