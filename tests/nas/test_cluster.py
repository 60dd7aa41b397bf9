"""Ray on a real loopback cluster: slimming's evaluations fan out as tasks, same trajectory."""
import csv
import os
import subprocess

import pytest

from nas.cli import main
from nas.cluster import RAY_ENV

pytestmark = pytest.mark.slow


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


def test_slim_on_ray_takes_the_in_process_trajectory(cluster, tiny_run, tmp_path):
    import ray

    from lut import build
    from nas import checkpoint

    # a CPU table measured once, so both runs price every config identically
    tables = tmp_path / "tables"
    net = checkpoint.build_supernet(checkpoint.load(tiny_run))
    table = build.new_table("cpu", net.space.resolution, 1)
    table.path = tables / f"cpu@{net.space.resolution}.yaml"
    start_ms = build.Predictor(table, True, rounds=3, progress=False)(
        net.initial_choice().to_config(net.space, num_classes=net.num_classes))
    argv = ["slim", "--target-ms", f"{0.7 * start_ms:.4f}", "--supernet", str(tiny_run), "--tables", str(tables),
            "--val-images", "200", "--calib-images", "64", "--no-progress"]
    assert main(argv + ["--out", str(tmp_path / "local")]) == 0
    assert main(argv + ["--out", str(tmp_path / "ray"), "--ray-address", cluster.address]) == 0
    assert not ray.is_initialized()          # the driver detached
    local = _trajectory(next((tmp_path / "local").glob("*.trajectory.csv")))
    on_ray = _trajectory(next((tmp_path / "ray").glob("*.trajectory.csv")))
    assert len(local) > 1 and on_ray == local


def test_a_bad_address_is_one_line(tiny_run, tmp_path, capsys):
    assert main(["slim", "--target-ms", "0.485", "--device", "iphone12", "--supernet", str(tiny_run), "--tables",
                 str(tmp_path), "--ray-address", "127.0.0.1:1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--ray-address 127.0.0.1:1" in err


def test_search_on_ray_workers_share_one_study(cluster, tiny_run, tmp_path):
    import optuna

    from nas import search

    out = tmp_path / "search"
    assert main(["search", "--target-ms", "0.5", "--device", "iphone12", "--supernet", str(tiny_run),
                 "--tables", str(tmp_path / "tables"), "--out", str(out), "--trials", "10", "--population", "4",
                 "--val-images", "100", "--calib-images", "32", "--ray-address", cluster.address, "--workers", "2",
                 "--no-progress"]) == 0
    study = optuna.load_study(study_name="efficientformer@iphone12-0.5ms", storage=search.open_storage(None, out))
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert 10 <= len(finished) <= 11 and len({t.number for t in study.trials}) == len(study.trials)
    assert (out / "trials.csv").is_file() and (out / "pareto.png").is_file()
