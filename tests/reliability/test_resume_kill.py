"""A CLI training run SIGKILLed at random points and resumed ends bit for bit where an uninterrupted run ends.

Each killed run is a real ``python -m meta_learning.cli train`` process. Kill points are delays drawn with a
seeded ``random.Random``: in the default suite ``U(0, 0.6) * T_train`` after the process writes a checkpoint (so it
dies mid-training), in the slow suite ``U(0, 1.2) * T`` after it enters ``train_experiment`` (it rewrites
``config.yaml``), ``T`` being the reference run's time, so kills land in data loading, training steps,
checkpoint and metrics writes, the final evaluation and the results write. After a kill the run is continued with
``--resume`` (or started again when the kill came before the first checkpoint, exactly as a user would), and at the
end every tensor of the final checkpoint (model, optimizer, sampler generator, RNG state) must equal the
uninterrupted reference's (``torch.equal``), as must ``best.pt``, the test accuracy and the metrics log.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import meta_learning
from _reliability import tiny_config, write_config
from meta_learning._io import safe_torch_load
from meta_learning.config import load_config
from meta_learning.experiment import train_experiment

SRC = Path(meta_learning.__file__).resolve().parents[1]
TIMEOUT_S = 120
KILL_LOG: list[tuple[int, bool, int | None]] = []  # (chain, killed, checkpointed step after the kill)


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    return env


def _train_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "meta_learning.cli", "train", *args, "--no-progress"]


def _run_to_end(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _reference(config: Path, run: Path) -> float:
    """Train uninterrupted (in this process: same code, same single thread); return its wall time in seconds."""
    start = time.perf_counter()
    train_experiment(load_config(config), run, progress=False)
    return time.perf_counter() - start


def _run_and_kill(cmd: list[str], marker: Path, delay_s: float) -> bool:
    """Start ``cmd``, SIGKILL it ``delay_s`` after it (re)writes ``marker`` (``config.yaml``: it entered
    ``train_experiment``; ``checkpoints/last.pt``: it checkpointed); return whether it was killed (False: it
    finished first)."""
    before = marker.stat().st_ino if marker.exists() else None  # config.yaml is replaced atomically: new inode
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            if marker.stat().st_ino != before:
                break
        time.sleep(0.002)
    try:
        proc.wait(timeout=delay_s)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return True
    assert proc.returncode == 0, proc.stderr.read().decode()[-3000:] if proc.stderr else ""
    return False


def _continue_cmd(config: Path, run: Path) -> list[str]:
    """``--resume`` once a checkpoint exists; before that, a fresh start in the same folder."""
    if (run / "checkpoints" / "last.pt").is_file():
        return _train_cmd(str(run), "--resume")
    return _train_cmd(str(config), "--run-dir", str(run))


def _tensors(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor inside nested dicts/lists, keyed by its path."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    out: dict[str, torch.Tensor] = {}
    for key, value in items:
        out.update(_tensors(value, f"{prefix}/{key}"))
    return out


def _assert_same_final_state(ref: Path, run: Path) -> None:
    a, b = safe_torch_load(ref / "checkpoints" / "last.pt"), safe_torch_load(run / "checkpoints" / "last.pt")
    assert a["step"] == b["step"]
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys() and any(k.startswith("/model/") for k in ta)
    for key, tensor in ta.items():
        assert tensor.dtype == tb[key].dtype and torch.equal(tensor, tb[key]), f"{key} differs after resume"
    best_a, best_b = safe_torch_load(ref / "checkpoints" / "best.pt"), safe_torch_load(run / "checkpoints" / "best.pt")
    assert best_a["step"] == best_b["step"]
    for key, tensor in best_a["model"].items():
        assert torch.equal(tensor, best_b["model"][key]), f"best.pt {key} differs after resume"
    ra, rb = (json.loads((r / "results.json").read_text()) for r in (ref, run))
    assert ra["test"] == rb["test"] and ra["best_step"] == rb["best_step"] and ra["steps"] == rb["steps"]

    def records(r: Path) -> list[dict[str, Any]]:
        lines = (r / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "time_s"} for line in lines]

    assert records(ref) == records(run)  # no torn or duplicated lines survive a kill


def _kill_resume_chains(
    root: Path,
    tmp_path: Path,
    *,
    chains: int,
    kills: int,
    seed: int,
    num_episodes: int,
    spread: tuple[float, float],
    after: str,
    cli_reference: bool = False,
) -> tuple[int, int]:
    """Run ``chains`` runs, each SIGKILLed ``kills`` times ``U(spread) * T`` after it writes ``after`` (a path in
    the run folder; ``T`` the reference's time from that point); return (kills that hit a live process, runs
    identical to the reference)."""
    cfg = tiny_config(root, num_episodes=num_episodes, checkpoint_every=3, eval_every=10)
    config = write_config(tmp_path / "tiny.yaml", cfg)
    ref = tmp_path / "reference"
    window = _reference(config, ref)
    if after != "config.yaml":  # from the first checkpoint on: the reference's training time
        window = json.loads((ref / "results.json").read_text())["train_wall_time_s"]
    if cli_reference:  # the in-process reference equals an uninterrupted CLI process
        _run_to_end(_train_cmd(str(config), "--run-dir", str(tmp_path / "cli-reference")))
        _assert_same_final_state(ref, tmp_path / "cli-reference")
    rng = random.Random(seed)
    landed = identical = 0
    for chain in range(chains):
        run = tmp_path / f"killed-{chain}"
        for _ in range(kills):
            killed = _run_and_kill(_continue_cmd(config, run), run / after, rng.uniform(*spread) * window)
            landed += killed
            last = run / "checkpoints" / "last.pt"
            KILL_LOG.append((chain, killed, int(safe_torch_load(last)["step"]) if last.is_file() else None))
        _run_to_end(_continue_cmd(config, run))
        _assert_same_final_state(ref, run)
        identical += 1
    return landed, identical


def test_sigkilled_cli_run_resumes_to_identical_weights(image_folder_root, tmp_path):
    landed, identical = _kill_resume_chains(
        image_folder_root,
        tmp_path,
        chains=1,
        kills=2,
        seed=0,
        num_episodes=60,
        spread=(0.0, 0.6),
        after="checkpoints/last.pt",
    )
    print("kills (chain, killed, last checkpoint step):", KILL_LOG)
    assert identical == 1
    assert landed >= 1, "no kill hit a running process; the kill window is mis-measured"


@pytest.mark.slow
def test_many_sigkills_resume_to_identical_weights(image_folder_root, tmp_path):
    landed, identical = _kill_resume_chains(
        image_folder_root,
        tmp_path,
        chains=6,
        kills=3,
        seed=1,
        num_episodes=150,
        spread=(0.0, 1.2),
        after="config.yaml",
        cli_reference=True,
    )
    print(f"kill/resume: {landed} SIGKILLs landed over 6 runs; {identical} of 6 resumed runs identical; {KILL_LOG}")
    assert identical == 6 and landed >= 12
