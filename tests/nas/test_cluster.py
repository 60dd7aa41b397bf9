"""Ray on a real loopback cluster: slimming's evaluations fan out as tasks, same trajectory."""
import csv
import os
import subprocess

import pytest

from nas.cli import main
from nas.cluster import RAY_ENV
from nas.session import SupernetSession

@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes on 127.0.0.1 (a head and a worker with one CPU each), stopped afterwards."""
    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 80 * 2**20,
                                                       "node_ip_address": "127.0.0.1"})
    c.add_node(num_cpus=1, object_store_memory=80 * 2**20, node_ip_address="127.0.0.1")
    c.wait_for_nodes()
    session = c.head_node.get_session_dir_path()
    yield c
    c.shutdown()
    left = subprocess.run(["pgrep", "-f", session], capture_output=True, text=True).stdout.split()
    assert not left, f"Ray processes of {session} still running: {left}"


def _trajectory(path):
    return [(r["action"], r["detail"], r["latency_ms"], r["accuracy"]) for r in csv.DictReader(open(path))]


@pytest.mark.slow
def test_slim_on_ray_takes_the_in_process_trajectory(cluster, tiny_run, tmp_path):
    import ray

    from lut import store
    from nas import checkpoint
    from nas.slim import reachable_floor

    # the iphone12 cost model prices both runs' configs identically (estimated, not timed)
    tables = tmp_path / "tables"
    net = checkpoint.build_supernet(checkpoint.load(tiny_run))
    _, predict = store.open_predictor("iphone12", net.space.resolution, tables, progress=False)
    start = net.initial_choice()
    start_ms = predict(start.to_config(net.space, num_classes=net.num_classes))
    session = SupernetSession.open(supernet=tiny_run, device="iphone12", tables_dir=tables, val_images=200,
                                   calib_images=64, progress=False)
    target = round((start_ms + reachable_floor(net, predict, start)) / 2, 4)   # halfway to the floor
    session.slim([target], tmp_path / "local")
    session.slim([target], tmp_path / "ray", ray_address=cluster.address)
    assert not ray.is_initialized()          # the driver detached
    local = _trajectory(next((tmp_path / "local").glob("*.trajectory.csv")))
    on_ray = _trajectory(next((tmp_path / "ray").glob("*.trajectory.csv")))
    assert len(local) > 1 and on_ray == local


@pytest.mark.slow
def test_a_bad_address_is_one_line(tiny_run, tmp_path, capsys):
    assert main(["slim", "--target-ms", "0.485", "--device", "iphone12", "--supernet", str(tiny_run), "--tables",
                 str(tmp_path), "--ray-address", "127.0.0.1:1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--ray-address 127.0.0.1:1" in err


@pytest.mark.slow
def test_search_on_ray_workers_share_one_study(cluster, tiny_run, tmp_path):
    import optuna

    from nas import search

    out = tmp_path / "search"
    session = SupernetSession.open(supernet=tiny_run, device="iphone12", tables_dir=tmp_path / "tables",
                                   val_images=100, calib_images=32, progress=False)
    session.search([0.5], out, trials=10, population=4, ray_address=cluster.address, workers=2, progress=False,
                   log=lambda line: None)
    study = optuna.load_study(study_name="efficientformer@iphone12-0.5ms", storage=search.open_storage(None, out))
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert 10 <= len(finished) <= 11 and len({t.number for t in study.trials}) == len(study.trials)
    assert (out / "trials.csv").is_file() and (out / "pareto.png").is_file()


def _train_on_ray(tiny_space_path, run_dir, epochs, cluster_address):
    """`nas train-supernet` on two Ray workers, as a library call."""
    from nas.train import supernet_recipe, train_supernet_run

    recipe = supernet_recipe(space=str(tiny_space_path), img_size=32, epochs=epochs, batch_size=128)
    return train_supernet_run(recipe, run_dir, workers=2, ray_address=cluster_address, progress=False,
                              log=lambda line: None)


@pytest.mark.slow
def test_ddp_on_two_nodes_survives_a_killed_worker_and_writes_the_single_process_checkpoint(cluster, tiny_space_path,
                                                                                           tmp_path, capsys):
    """Two DDP workers, one per node. Kill rank 1 (SIGKILL) once Ray has registered epoch 1's
    checkpoint: the group restarts from the newest registered checkpoint and the run completes,
    losing at most the epoch in flight. (Ray registers a reported checkpoint asynchronously; a
    kill before that loses it too.) The driver runs in the main thread, as Ray Train wants; a
    watcher thread does the killing. The result is the checkpoint a single process writes."""
    import json
    import signal
    import threading
    import time

    from nas import checkpoint

    run = tmp_path / "run"
    seen = {}

    def events():
        path = run / "ray_events.log"
        return [line.split() for line in path.read_text().splitlines()] if path.exists() else []

    def registered_epoch() -> int:
        for snapshot in (run / "ray").rglob("checkpoint_manager_snapshot.json"):
            try:
                latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result") or {}
            except (OSError, ValueError):   # being rewritten
                return 0
            return int(latest.get("metrics", {}).get("epoch", 0))
        return 0

    def kill_rank_1_after_first_checkpoint():
        deadline = time.time() + 300
        while time.time() < deadline and registered_epoch() < 1:
            time.sleep(0.05)
        seen["done_at_kill"] = registered_epoch()
        victims = [int(e[4]) for e in events() if e[2] == "1" and e[5] == "starts"]
        if seen["done_at_kill"] and victims:
            os.kill(victims[0], signal.SIGKILL)
            seen["killed"] = victims[0]

    watcher = threading.Thread(target=kill_rank_1_after_first_checkpoint, daemon=True)
    watcher.start()
    _train_on_ray(tiny_space_path, run, 4, cluster.address)
    watcher.join(timeout=10)
    assert "killed" in seen, seen
    starts = [int(e[-1]) for e in events() if e[5] == "starts"]
    restarts = starts[2:]                                                     # after the first two ranks
    assert restarts, "no worker restarted"
    # resumed from the checkpoint registered before the kill (or a later one): at most the epoch in
    # flight is lost
    assert min(restarts) >= seen["done_at_kill"] + 1 >= 2
    assert sorted(e[2] for e in events()[:2]) == ["0", "1"]                   # two ranks started it
    ckpt = checkpoint.load(run / "supernet.pt")
    assert ckpt["epoch"] == 4 and [h["epoch"] for h in ckpt["history"]] == [1, 2, 3, 4]
    assert [h["workers"] for h in ckpt["history"]] == [2] * 4
    assert ckpt["history"][-1]["val_acc"] > ckpt["history"][0]["val_acc"]
    assert any(float(a.abs().max()) > 0 for a in ckpt["alpha"].values())     # α trained (from zeros)
    checkpoint.build_supernet(ckpt)                                            # what nas slim loads
    assert main(["show", str(run)]) == 0
    assert "importance" in capsys.readouterr().out


@pytest.mark.slow
def test_a_workers_own_error_is_one_line_and_leaves_no_run(cluster, tiny_space_path, tmp_path, capsys):
    """The IDX files are missing: each worker raises our one-line error, which Ray wraps in a
    multi-page group failure; the user sees the line a local run prints, and the half-born run is
    gone. (Which error classes the driver unwraps, a config error's among them: test_worker_error_lines.)"""
    (tmp_path / "empty").mkdir()
    argv = ["train-supernet", "--space", str(tiny_space_path), "--img-size", "32", "--epochs", "1", "--batch-size",
            "128", "--runs", str(tmp_path), "--name", "nodata", "--no-progress",
            "--data", f"fashion-mnist:{tmp_path / 'empty'}"]
    assert main(argv) == 2
    local = capsys.readouterr().err.strip()
    assert main(argv + ["--ray-address", cluster.address, "--workers", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train-images-idx3-ubyte[.gz] not found" in err, err
    assert err == local
    assert not (tmp_path / "nodata").exists()


def test_worker_error_lines():
    from nas.ray_train import _worker_error_line
    from nas.errors import UserError

    # Ray's report names the class by the module that defines it (nas.core.errors since lut raises it too)
    wrapped = RuntimeError("Training failed\nTraceback ...\n  File x\n"
                           f"{UserError.__module__}.UserError: --batch-size 9: too big\n\nmore")
    assert _worker_error_line(wrapped) == "--batch-size 9: too big"
    # any error a user can cause, e.g. a config error, named by its own class
    from supernets.config import ConfigError

    wrapped = RuntimeError(f"Training failed\n...\n{ConfigError.__module__}.ConfigError: stages[0].width: 7 is "
                           "not a multiple of 16\n")
    assert _worker_error_line(wrapped) == "stages[0].width: 7 is not a multiple of 16"
    assert _worker_error_line(ValueError("boom\nline 2")) == "Ray Train failed (ValueError: boom)"
