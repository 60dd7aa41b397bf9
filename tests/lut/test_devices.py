import pytest

from lut import build
from lut.devices import BUILTIN, DeviceError, get_device, user_devices
from nas.cli import main


def test_builtin_devices_name_their_backend():
    assert {d: BUILTIN[d].backend for d in ("cpu", "cuda", "onnxruntime", "xnnpack", "iphone12", "iphone13")} == {
        "cpu": "torch-eager", "cuda": "torch-cuda", "onnxruntime": "onnxruntime", "xnnpack": "executorch",
        "iphone12": "coreml", "iphone13": "coreml"}
    assert BUILTIN["cpu"].measurable and not BUILTIN["iphone12"].measurable


def test_user_devices_come_from_devices_yaml(tmp_path):
    (tmp_path / "devices.yaml").write_text(
        "devices:\n  - {name: ort-2t, backend: onnxruntime, threads: 2, resolution: 96, description: two threads}\n"
        "  - {name: iphone15, backend: coreml}\n"
        "  - {name: pixel8, backend: executorch, threads: 4}\n"
        "  - {name: xnnpack-2t, backend: executorch, threads: 2, timed: here}\n")
    devices = user_devices(tmp_path)
    # an ExecuTorch device is a phone (exported, timed there, imported) unless it says it is this machine
    assert not devices["pixel8"].timed_here and "timed on the device itself" in devices["pixel8"].unavailable_reason
    assert devices["pixel8"].exporter == "lut.pte" and devices["xnnpack-2t"].timed_here
    assert devices["ort-2t"].threads == 2 and devices["ort-2t"].resolution == 96 and devices["ort-2t"].measurable
    assert not get_device("iphone15", tmp_path).measurable and not get_device("iphone15", tmp_path).builtin
    with pytest.raises(DeviceError, match="declare your own in"):
        get_device("ort-2t")                    # not without the tables directory that declares it


@pytest.mark.parametrize("entry, message", [
    ("{name: x, backend: tpu}", "devices[0].backend: 'tpu' is not one of"),
    ("{name: cpu, backend: onnxruntime}", "devices[0].name: 'cpu' is already a device"),
    ("{name: x, backend: onnxruntime, threads: 0}", "devices[0].threads: 0 is not a positive integer"),
    ("{name: x, backend: onnxruntime, resolution: 100}", "devices[0].resolution: 100 is not a positive multiple"),
    ("{name: x@y, backend: onnxruntime}", "devices[0].name: 'x@y' is not a device name"),
    ("{name: x, backend: coreml, cores: 4}", "unknown field(s) cores"),
    ("{name: x, backend: executorch, timed: phone}", "devices[0].timed: 'phone' is not 'here'"),
    ("{name: x, backend: coreml, timed: here}", "backend coreml cannot time on this machine"),
])
def test_bad_user_device_is_one_line_exit_2(tmp_path, capsys, entry, message):
    (tmp_path / "devices.yaml").write_text(f"devices:\n  - {entry}\n")
    assert main(["lut", "devices", "--tables", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.slow   # lists every family's ops at two resolutions: ~20 s
def test_lut_devices_lists_devices_with_their_tables_and_coverage(tmp_path, capsys, tiny_space):
    (tmp_path / "devices.yaml").write_text("devices:\n  - {name: ort-2t, backend: onnxruntime, threads: 2}\n")
    table = build.new_table("cpu", 224, 1)
    for key in list(build.space_ops(tiny_space.replace(resolution=224), 10))[:3]:
        table.add(key, 1.0, source="estimated")
    table.save(tmp_path / "cpu@224.yaml")
    # the small spaces' coverage: listing the paper spaces' ops of every shipped table is most of the
    # command's time (20 s here), and what is tested is the listing, not which space
    assert main(["lut", "devices", "--tables", str(tmp_path), "--space", "small"]) == 0
    out = capsys.readouterr().out
    assert "ort-2t  [onnxruntime, 2 thread(s), user" in out
    assert "iphone12  [coreml" in out and "not measurable here" in out
    line = next(ln for ln in out.splitlines() if "cpu@224.yaml" in ln)
    assert "(user, 224 px, 3 ops: 3 estimated)" in line and "covers efficientformer 3/" in line

