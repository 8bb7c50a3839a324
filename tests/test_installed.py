"""The command as a user installs it: a wheel built with `pip wheel .` carries every config, and its
console script `aprelu-exp`, installed (not editable) into a fresh virtual environment, composes,
helps, completes and trains from any folder; --help and completion never import torch."""
import os
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PIP = [sys.executable, "-m", "pip"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([*PIP, "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
                   check=True, capture_output=True, text=True)
    (whl,) = out.glob("aprelu_exp-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv holding the wheel alone; its dependencies come from this environment's
    site-packages through a .pth line (the checkout itself is not on its path)."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # Installed first, into the bare venv (where no aprelu-exp is "already satisfied"), then the
    # dependencies are made visible.
    subprocess.run([*PIP, "--python", str(venv / "bin" / "python"), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, text=True, env=_env())
    (site / "_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COMP_LINE", "COMP_POINT")}
    return {**env, **extra}


def _aprelu(venv: Path, args, cwd: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "aprelu-exp"), *args], cwd=cwd, env=_env(**env), capture_output=True,
                          text=True, timeout=600)


def test_the_wheel_carries_every_config(wheel):
    shipped = {n.split("aprelu_exp/conf/", 1)[1] for n in zipfile.ZipFile(wheel).namelist()
               if n.startswith("aprelu_exp/conf/")}
    expected = {p.relative_to(REPO / "conf").as_posix() for p in (REPO / "conf").rglob("*.yaml")}
    assert expected and shipped == expected


def test_the_installed_command_composes_and_helps_from_any_folder(installed, tmp_path):
    where = subprocess.run([installed / "bin" / "python", "-c", "import aprelu_exp; print(aprelu_exp.__file__)"],
                           cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert str(installed) in where.stdout, where  # the wheel's copy, not the checkout
    cfg = _aprelu(installed, ["--cfg", "job", "model.reduction=4"], tmp_path)
    assert cfg.returncode == 0, cfg.stderr
    assert "reduction: 4" in cfg.stdout and "_target_: torch.optim.SGD" in cfg.stdout
    help_out = _aprelu(installed, ["--help"], tmp_path)
    assert help_out.returncode == 0 and "record_16" in help_out.stdout and "adamw" in help_out.stdout
    bad = _aprelu(installed, ["--cfg", "job", "model.reducton=4"], tmp_path)
    assert bad.returncode == 2 and "Did you mean model.reduction" in bad.stderr and "Traceback" not in bad.stderr


def test_the_installed_records_command_lists_and_plans_a_replay(installed, tmp_path):
    """`aprelu-exp-records`, the records tools without `python -m`: the lineage, a replay's plan (its
    runs counted, nothing trained) and a refusal, from a folder outside the checkout."""
    records = str(installed / "bin" / "aprelu-exp-records")
    listed = subprocess.run([records, "list"], cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert listed.returncode == 0 and "record_16  [exact]" in listed.stdout, listed.stderr
    plan = subprocess.run([records, "replay", "record_16", "--seeds", "2", "--plan", "budget=1",
                           f"run_root={tmp_path / 'runs'}"], cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert plan.returncode == 0, plan.stderr
    assert "2 records x 2 seeds = 4 runs (record_15, record_16" in plan.stdout and "0 of 4 already done" in plan.stdout
    assert not (tmp_path / "runs").exists()
    bad = subprocess.run([records, "replay", "record_166"], cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert bad.returncode == 2 and "did you mean record_16" in bad.stderr and "Traceback" not in bad.stderr


def _complete(venv: Path, line: str, cwd: Path) -> list[str]:
    out = _aprelu(venv, ["-sc", "query=bash"], cwd, COMP_LINE=line, COMP_POINT=str(len(line)))
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    return out.stdout.split()


def test_the_installed_command_completes_groups_keys_and_values(installed, tmp_path):
    assert sorted(_complete(installed, "aprelu-exp augment=", tmp_path)) == ["augment=keras", "augment=none"]
    assert "optim=adamw" in _complete(installed, "aprelu-exp optim=a", tmp_path)
    assert "model.reduction=" in _complete(installed, "aprelu-exp model.redu", tmp_path)
    assert _complete(installed, "aprelu-exp model.stages=[[[", tmp_path) == []  # does not parse: nothing


def test_the_readmes_completion_lines_complete_in_bash(installed, tmp_path):
    readme = (REPO / "README.md").read_text()
    lines = [ln.split("#")[0].strip() for ln in readme.splitlines() if "-sc install=bash" in ln]
    assert lines, "the README gives no completion line"
    line = "aprelu-exp optim="
    script = "\n".join([lines[0], f"COMP_LINE='{line}'; COMP_POINT={len(line)}; COMP_CWORD=1",
                        "hydra_bash_completion", 'printf "%s\\n" "${COMPREPLY[@]}"'])
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env=_env(PATH=f"{installed / 'bin'}:{os.environ['PATH']}"))
    assert sorted(out.stdout.split()) == ["optim=adamw", "optim=sgd"], (out.stdout, out.stderr)


def test_a_broken_install_names_the_folder_and_the_fix(installed, tmp_path):
    conf = Path(subprocess.run([installed / "bin" / "python", "-c",
                                "import aprelu_exp.compose as c; print(c.CONF_DIR)"], env=_env(), cwd=tmp_path,
                               capture_output=True, text=True).stdout.strip())
    hidden = conf.with_name("conf_hidden")
    conf.rename(hidden)
    try:
        out = _aprelu(installed, ["--cfg", "job"], tmp_path)
    finally:
        hidden.rename(conf)
    assert out.returncode == 2 and str(conf) in out.stderr and "Reinstall" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("args, env", [
    (["--help"], {}),
    (["--cfg", "job"], {}),
    (["-sc", "query=bash"], {"COMP_LINE": "aprelu-exp model/activation=", "COMP_POINT": "30"}),
    (["model.reducton=3"], {}),
], ids=["help", "cfg", "completion", "bad-override"])
def test_answers_without_importing_torch(args, env, tmp_path):
    probe = ("import runpy, sys\nsys.argv = ['aprelu-exp', *sys.argv[1:]]\ntry:\n"
             "    runpy.run_module('aprelu_exp', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "print('TORCH', 'torch' in sys.modules, 'pytorch_lightning' in sys.modules, file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", probe, *args], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=300)
    assert "TORCH False False" in out.stderr, out.stderr[-2000:]


@pytest.mark.slow
def test_the_installed_command_trains_stops_and_resumes_from_another_folder(installed, tmp_path, cifar_root):
    """Ctrl-C in the second epoch: the line names the command the user typed, and that command
    finishes the run."""
    marker = tmp_path / "paused"
    small = ["data.train_subset=100", "data.test_subset=100", "trainer.max_epochs=2", "logger=none",
             "trainer.enable_progress_bar=false"]
    env = _env(APRELU_DATA_ROOT=str(cifar_root), APRELU_PAUSE_AT="validation", APRELU_PAUSE_MARKER=str(marker))
    proc = subprocess.Popen([str(installed / "bin" / "aprelu-exp"), *small], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate()[1][-3000:]
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGINT, err[-3000:]
    (status,) = (tmp_path / "runs").rglob("status.json")
    run = status.parent
    assert f"Resume with: aprelu-exp resume={run}" in err
    out = _aprelu(installed, [f"resume={run}"], tmp_path, APRELU_DATA_ROOT=str(cifar_root))
    assert out.returncode == 0, out.stderr[-3000:]
    assert '"status": "finished"' in (run / "summary.json").read_text()
