"""The csakd-fast command: fuse round trips in every writable format, evaluate, train/resume
through the CLI, and its error paths (a one-line message and exit status 2)."""
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import csakd_fast as cf
from conftest import requires
from csakd_fast.cli import main
from csakd_fast.data import read_cube, write_cube
from csakd_fast.inference import default_output, fuse
from csakd_fast.training.evaluate import format_table

L, M, S = 12, 3, 4
SRF = np.eye(M).repeat(L // M, axis=1) / (L // M)
WL = np.linspace(400.0, 1000.0, L)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = cf.CSAKDNet(cf.CSAKDConfig.student(bands=L, msi_bands=M, nf=8, gc=4, heads=2, attn_dim=8))
    path = tmp_path_factory.mktemp("ckpt") / "student.pth"
    cf.save_checkpoint(path, model)
    return path, model


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(1)
    hr = rng.uniform(0.05, 0.6, size=(24, 20, L)).astype(np.float32)
    lr = hr.reshape(6, S, 5, S, L).mean((1, 3))
    msi = (hr @ SRF.T).astype(np.float32)
    return lr, msi, hr


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.mark.parametrize("suffix", [".npy", ".mat", pytest.param(".hdr", marks=requires("spectral")),
                                    ".tif"])
def test_fuse_round_trip(checkpoint, pair, tmp_path, suffix, capsys):
    path, model = checkpoint
    lr, msi, _ = pair
    lr_file = write_cube(tmp_path / f"lr{suffix}", lr, None if suffix == ".npy" else WL)
    msi_file = write_cube(tmp_path / f"msi{suffix}", msi)
    code, out, err = _run(["fuse", path, "--lr-hsi", lr_file, "--hr-msi", msi_file, "--device", "cpu"], capsys)
    assert code == 0, err
    written = default_output(lr_file)
    assert written.suffix == suffix and f"fused: {written}" in out
    cube = read_cube(written)
    assert cube.data.shape == (24, 20, L)
    np.testing.assert_allclose(cube.data, fuse(model, lr, msi), rtol=1e-5, atol=1e-6)
    if suffix != ".npy":
        np.testing.assert_allclose(cube.wavelengths, WL)


def test_fuse_maps_back_to_the_inputs_scale(checkpoint, pair):
    """Scaling both inputs by a > 0 and shifting by b gives a·out + b (the min-max normalisation)."""
    _, model = checkpoint
    lr, msi, _ = pair
    a, b = 37.0, 5.0
    np.testing.assert_allclose(fuse(model, a * lr + b, a * msi + b), a * fuse(model, lr, msi) + b,
                               rtol=1e-4, atol=1e-3)


def test_fuse_errors(checkpoint, pair, tmp_path, capsys):
    path, model = checkpoint
    lr, msi, _ = pair
    lr_file = write_cube(tmp_path / "lr.npy", lr)
    bad_size = write_cube(tmp_path / "msi_small.npy", msi[:20])
    bad_bands = write_cube(tmp_path / "msi_bands.npy", np.concatenate([msi, msi[..., :1]], -1))
    for msi_file, match in ((bad_size, "hr_msi: expected 24×20 pixels"), (bad_bands, "takes 3 bands")):
        code, _, err = _run(["fuse", path, "--lr-hsi", lr_file, "--hr-msi", msi_file], capsys)
        assert code == 2 and match in err and err.count("\n") == 1
    code, _, err = _run(["fuse", tmp_path / "nope.pth", "--lr-hsi", lr_file, "--hr-msi", lr_file], capsys)
    assert code == 2 and "no checkpoint file" in err
    with pytest.raises(ValueError, match="constant"):
        fuse(model, np.ones_like(lr), msi)


@requires("pyrsr")   # the default srf, sentinel2
def test_evaluate_command(checkpoint, pair, tmp_path, capsys):
    path, _ = checkpoint
    _, _, hr = pair
    cube = write_cube(tmp_path / "scene.npz", hr, WL)
    np.save(tmp_path / "srf.npy", SRF)
    out_json = tmp_path / "metrics.json"
    code, out, err = _run(["evaluate", path, path, "--data", cube, "--srf", tmp_path / "srf.npy",
                           "--json", out_json, "--device", "cpu"], capsys)
    assert code == 0, err
    res = json.loads(out_json.read_text())
    assert set(res["mean"]) == {"bicubic", "student", "student#1"}
    assert res["mean"]["student"] == res["mean"]["student#1"]
    assert "| bicubic |" in out and "| student |" in out
    code, _, err = _run(["evaluate", path, "--data", cube, "--srf", "sentinel2"], capsys)
    assert code == 2 and ("--data" in err or "srf" in err)


@requires("matplotlib", "tensorboard")   # the report and the TensorBoard scalars
def test_train_and_resume_through_the_cli(tmp_path, capsys):
    rng = np.random.default_rng(0)
    files = []
    for i in range(2):
        f = tmp_path / f"c{i}.npy"
        np.save(f, rng.uniform(0.1, 0.9, size=(16, 16, L)).astype(np.float32))
        files.append(f)
    toml = tmp_path / "run.toml"
    toml.write_text(f"srf = {json.dumps(SRF.tolist())}\ncrop_size = 8\nbatch_size = 2\ncrops_per_epoch = 2\n"
                    "epochs = 2\nteacher = { nf = 8, gc = 4, heads = 2, attn_dim = 8, layers = [1, 1, 1, 1] }\n"
                    "student = { nf = 8, gc = 4, heads = 2, attn_dim = 8 }\ntensorboard = false\nprogress = false\n"
                    'backend = { csa = "reference" }\n')
    out = tmp_path / "run"
    base = ["train", "--out", out, "--data", files[0], "--val-data", files[1]]
    code, stdout, err = _run(base + ["--config", toml, "--max-iters", "1", "--no-report"], capsys)
    assert code == 0, err
    stored = json.loads((out / "config.json").read_text())
    assert stored["max_iters"] == 1 and stored["backend"] == {"csa": "reference", "clra": "auto"}
    assert "| student |" in stdout and not (out / "report").exists()          # --no-report
    code, _, err = _run(["train", "--out", out, "--resume", "--set", "lr=0.5"], capsys)
    assert code == 2 and "resume" in err and "lr" in err
    code, _, err = _run(["train", "--out", out, "--resume", "--backend", "csa=torch"], capsys)
    assert code == 2 and "resume" in err and "backend" in err
    # the stored per-op choice, given again as text, is the same setting: the resume goes on
    code, stdout, err = _run(["train", "--out", out, "--resume", "--set", "max_iters=2",
                              "--backend", "csa=reference,clra=auto"], capsys)
    assert code == 0, err
    assert torch.load(out / "state.pt", weights_only=True)["iter"] == 2
    # the command prints the table of test.json (here the validation data: no test data given)
    # and writes the report
    res = json.loads((out / "test.json").read_text())
    which = "; ".join(f"{r}: {w}" for r, w in res["weights"].items())
    assert format_table(res["mean"], f"val metrics, 1 image(s) ({which})") in stdout
    assert "| bicubic |" in stdout and "| student |" in stdout
    assert f"report: {out / 'report' / 'report.md'}" in stdout
    assert (out / "report" / "report.md").is_file() and (out / "report" / "composites.png").is_file()


@pytest.mark.parametrize("argv, match", [
    (["train", "--config", "nope.toml"], "no such file"),
    (["train", "--set", "bogus=1"], "unknown settings"),
    (["train", "--set", "novalue"], "KEY=VALUE"),
    (["train", "--set", "batch_size=0"], "batch_size"),
    (["train", "--resume", "--config", "demo"], "--config"),
    (["report", "."], "not a finished training run"),
    (["evaluate", "missing.pth"], "no checkpoint file"),
    (["train", "--backend", "fast"], "--backend: expected one of"),
    (["train", "--backend", "csa=cpp,gemm=torch"], "--backend: expected ops among csa, clra"),
    (["train", "--backend", "csa=cpp,,clra=torch"], "--backend: expected a backend name or OP=NAME pairs"),
    (["train", "--set", "backend={gemm = 'torch'}"], "backend: expected ops among"),
    (["train", "--set", "backend=csa=bogus"], "backend['csa']: expected one of"),
    (["evaluate", "missing.pth", "--backend", "csa=fast"], "--backend['csa']: expected one of"),
    (["fuse", "missing.pth", "--lr-hsi", "a.npy", "--hr-msi", "b.npy", "--backend", "csa="],
     "--backend: expected a backend name or OP=NAME pairs"),
])
def test_cli_errors_are_one_line_and_exit_2(argv, match, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(argv, capsys)
    assert code == 2 and match in err and err.startswith("csakd-fast ") and err.count("\n") == 1


def test_info_lists_usable_backends_autos_pick_and_the_reasons(capsys):
    from csakd_fast import backends

    code, out, err = _run(["info"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"csakd_fast {cf.__version__}, torch {torch.__version__}")
    for op in backends.OPS:
        why_not = backends.explain(op, "cpu")
        usable = [b for b, why in why_not.items() if why is None]
        auto = backends.resolve(op, "auto", torch.device("cpu"))
        i = lines.index(f"  {op} on cpu: {', '.join(usable)} (auto: {auto})")
        reasons = [f"    {b}: not usable: {why}" for b, why in why_not.items() if why is not None]
        assert lines[i + 1:i + 1 + len(reasons)] == reasons
        assert auto in usable and "reference" in usable
        # every backend is accounted for: usable, or not with its reason
        assert len(usable) + len(reasons) == len(backends.BACKENDS)


def test_module_entry_point_and_info():
    r = subprocess.run([sys.executable, "-m", "csakd_fast", "info"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "csa on cpu:" in r.stdout and "torch" in r.stdout
    r = subprocess.run([sys.executable, "-m", "csakd_fast", "train", "--mode", "bogus"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_backend_help_names_every_backend_and_op():
    from csakd_fast import backends
    from csakd_fast.cli import BACKEND_HELP, build_parser

    words = set(re.findall(r"[a-z]+", BACKEND_HELP))
    assert set(backends.CHOICES) <= words and set(backends.OPS) <= words
    for argv in (["train"], ["evaluate", "c.pth"], ["fuse", "c.pth", "--lr-hsi", "a", "--hr-msi", "b"]):
        args = build_parser().parse_args(argv + ["--backend", "csa=cpp,clra=torch"])
        assert args.backend == "csa=cpp,clra=torch"


HEAVY = ("torch", "numpy", "scipy", "triton", "matplotlib", "h5py", "spectral", "tifffile")


def test_help_imports_neither_torch_nor_numpy():
    """``python -m csakd_fast --help`` (and each subcommand's --help, an argument error, a bare
    ``import csakd_fast``) in a fresh interpreter imports no heavy module: the package's public
    names are lazy and the command imports its engine inside the subcommands. (A check on
    sys.modules rather than a timing: deterministic.)"""
    code = r"""
import runpy, sys
heavy = set(sys.argv[1:])
import csakd_fast
assert "torch" not in sys.modules, "import csakd_fast imported torch"
from csakd_fast.cli import main
for argv in (["--help"], ["train", "--help"], ["evaluate", "--help"], ["fuse", "--help"],
             ["report", "--help"], ["info", "--help"], ["train", "--mode", "bogus"]):
    try:
        main(argv)
    except SystemExit as e:
        assert e.code == (2 if "bogus" in argv else 0), (argv, e.code)
    else:
        raise AssertionError(f"{argv}: no SystemExit")
sys.argv = ["csakd-fast", "--help"]
try:
    runpy.run_module("csakd_fast", run_name="__main__", alter_sys=True)
except SystemExit as e:
    assert e.code == 0, e.code
print("MODULES", sorted(m for m in sys.modules if m == "csakd_fast" or m.startswith("csakd_fast.")))
print("HEAVY", sorted({m.split(".")[0] for m in sys.modules} & heavy))
"""
    r = subprocess.run([sys.executable, "-c", code, *HEAVY], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "usage: csakd-fast" in r.stdout and "invalid choice: 'bogus'" in r.stderr
    assert "HEAVY []" in r.stdout, r.stdout.splitlines()[-1]
    assert "MODULES ['csakd_fast', 'csakd_fast.cli']" in r.stdout    # runpy runs __main__ as "__main__"
    # the installed entry point (`python -m csakd_fast`) answers --help as well
    r = subprocess.run([sys.executable, "-m", "csakd_fast", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "usage: csakd-fast" in r.stdout and "{train,evaluate,fuse,report,info}" in r.stdout
