"""Runs in MLflow: an embedded sqlite store by default, a real tracking server over HTTP."""
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from test_cli import run_cli

from aprelu_exp.errors import UserError
from aprelu_exp.runs.callbacks import NonFiniteLossError
from aprelu_exp.train import build_loggers, train

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

SMALL = ["data.train_subset=200", "data.test_subset=100", "trainer.max_epochs=1", "logger=mlflow"]


def _runs(uri):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("aprelu-exp")
    return client, (client.search_runs([exp.experiment_id]) if exp else [])


def _history(client, run, key):
    return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]


def test_a_run_lands_in_the_embedded_store_with_params_metrics_tags_and_files(make_cfg, cifar, tmp_path):
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    run_dir = tmp_path / "run"
    train(make_cfg(*SMALL, f"logger.mlflow.tracking_uri={uri}", "model.reduction=4"), run_dir, arrays=cifar)
    client, runs = _runs(uri)
    (run,) = runs
    assert run.data.params["model.reduction"] == "4"
    assert run.data.params["model.stages"] == "1x32, 1x32/2, 1x64/2"  # the stages, readably
    tags = run.data.tags
    assert (tags["record"], tags["parent"], tags["status"], tags["precision"]) == \
        ("record_16", "record_15", "finished", "32-true")
    assert tags["run_dir"] == str(run_dir.resolve()) and len(tags["data_digest.test_batch.bin"]) == 64
    # One point per epoch, the epoch as the step, the value metrics.csv holds.
    import csv
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    for key in ("val_acc_article", "val_acc", "train_loss_keras", "train_images_per_s", "lr"):
        assert _history(client, run, key) == [(1, pytest.approx(float(rows[0][key]), rel=1e-6))], key
    import json
    test = json.loads((run_dir / "summary.json").read_text())["test"]
    for key in ("test_acc", "test_acc_article", "test_loss", "test_loss_article"):
        assert _history(client, run, key) == [(1, pytest.approx(test[key], rel=1e-6))], key
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "summary.json", "metrics.csv"} <= files

    # Resumed: the same MLflow run goes on (its id is kept in the run directory).
    train(make_cfg(*SMALL, f"logger.mlflow.tracking_uri={uri}", "model.reduction=4", "trainer.max_epochs=2",
                   f"resume={run_dir}"), run_dir, arrays=cifar)
    client, runs = _runs(uri)
    (again,) = runs
    assert again.info.run_id == run.info.run_id
    assert [s for s, _ in _history(client, again, "val_acc_article")] == [1, 2]
    assert again.data.tags["status"] == "finished"


def test_the_default_store_lies_beside_the_runs(make_cfg, cifar, tmp_path):
    cfg = make_cfg(*SMALL)
    train(cfg, tmp_path / "run", arrays=cifar)
    client, runs = _runs(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    assert len(runs) == 1


def test_a_failed_run_is_tagged_failed(make_cfg, cifar, tmp_path):
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    with pytest.raises(NonFiniteLossError):
        train(make_cfg(*SMALL, f"logger.mlflow.tracking_uri={uri}", "optim.lr=1e30",
                       "data.train_subset=500"), tmp_path / "run", arrays=cifar)
    _, (run,) = _runs(uri)
    assert run.data.tags["status"] == "failed" and "train_loss became" in run.data.tags["error"]


def test_without_mlflow_the_logger_names_the_install_and_tensorboard_still_works(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    with pytest.raises(UserError, match=r"pip install mlflow.*logger=tensorboard"):
        build_loggers(make_cfg("logger=mlflow"), tmp_path)
    assert len(build_loggers(make_cfg("logger=tensorboard"), tmp_path)) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_run_logged_to_a_real_tracking_server(make_cfg, cifar, tmp_path):
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                               "--artifacts-destination", str(tmp_path / "server_artifacts"), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None, server.stderr.read()[-2000:]
            assert time.time() < deadline, "the MLflow server did not come up in 120 s"
            time.sleep(0.5)
        train(make_cfg(*SMALL, f"logger.mlflow.tracking_uri={uri}"), tmp_path / "run", arrays=cifar)
        client, (run,) = _runs(uri)
        assert run.data.tags["status"] == "finished" and run.data.params["model.reduction"] == "16"
        assert len(_history(client, run, "val_acc_article")) == 1
        assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.mark.slow
def test_a_sweep_groups_its_jobs_and_attaches_its_report(cli_env, tmp_path):
    out = run_cli(["-m", f"run_root={tmp_path}", *SMALL[:3], "logger=mlflow", "seed=0,1",
                   "data.train_subset=200"], cli_env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (sweep,) = list((tmp_path / "multirun").iterdir())
    client, runs = _runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert len(runs) == 3 and {r.data.tags.get("sweep") for r in runs} == {sweep.name}
    (report_run,) = [r for r in runs if r.data.tags.get("kind") == "sweep report"]
    assert {"report.md", "runs.csv", "accuracy.png"} <= {a.path for a in client.list_artifacts(report_run.info.run_id)}
    assert sorted(r.data.tags.get("status") for r in runs if r is not report_run) == ["finished", "finished"]
