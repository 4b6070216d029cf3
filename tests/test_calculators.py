"""MLIP calculators: names, lazy shared loading, MatterSim from a local checkpoint, clear errors."""

import subprocess
import sys

import numpy as np
import pytest
from ase.calculators.emt import EMT
from pymatgen.core import Lattice, Structure

from diffase.calculators import MATTERSIM_CHECKPOINT_ENV, get_calculator, load_mlip
from diffase.errors import CheckpointNotFoundError
from diffase.simulate import forces, single_points


def test_import_loads_no_model():
    code = ("import sys, diffase, diffase.calculators, diffase.simulate, diffase.analysis.stability; "
            "print(any(m in sys.modules for m in ('chgnet', 'mattersim')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unknown_calculator_lists_valid_names():
    with pytest.raises(ValueError, match="unknown calculator 'm3gnet'.*'chgnet', 'mattersim'"):
        get_calculator("m3gnet")


def test_ase_calculator_passes_through():
    calc = EMT()
    assert get_calculator(calc) is calc
    cu = Structure(Lattice.cubic(3.61), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    [sp] = single_points([cu], calc, stress=True)
    assert sp.forces.shape == (4, 3) and sp.stress.shape == (6,)
    assert sp.fmax < 1e-6


def test_mattersim_without_checkpoint_says_how(monkeypatch):
    monkeypatch.delenv(MATTERSIM_CHECKPOINT_ENV, raising=False)
    with pytest.raises(CheckpointNotFoundError, match=MATTERSIM_CHECKPOINT_ENV):
        get_calculator("mattersim", device="cpu")
    monkeypatch.setenv(MATTERSIM_CHECKPOINT_ENV, "/nonexistent/mattersim.pth")
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        get_calculator("mattersim", device="cpu")


@pytest.fixture(scope="module")
def tiny_mattersim(tmp_path_factory):
    """A randomly initialised one-block MatterSim (M3GNet) checkpoint, built here: no download."""
    pytest.importorskip("mattersim")
    import torch
    from mattersim.forcefield.m3gnet.m3gnet import M3Gnet
    from mattersim.forcefield.potential import Potential

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("mattersim") / "tiny.pth"
    Potential(M3Gnet(num_blocks=1, units=8, max_l=2, max_n=2, device="cpu"), device="cpu").save(str(path))
    return path


def test_mattersim_from_env_checkpoint_batched_matches_calculator(tiny_mattersim, monkeypatch, shared_data):
    monkeypatch.setenv(MATTERSIM_CHECKPOINT_ENV, str(tiny_mattersim))
    mlip = load_mlip("mattersim", device="cpu")
    assert load_mlip("mattersim", device="cpu") is mlip  # one shared model per process
    calc_a, calc_b = get_calculator("mattersim", device="cpu"), get_calculator("mattersim", device="cpu")
    assert calc_a is not calc_b and calc_a.potential is calc_b.potential is mlip.model

    li2o = Structure.from_file(shared_data / "pmg" / "cif_Li2O.cif")
    rattled = li2o.copy()
    rattled.perturb(0.1, min_distance=0.05, seed=0)
    batch = single_points([li2o, rattled], mlip, stress=True)
    atoms = rattled.to_ase_atoms()
    atoms.calc = calc_a
    assert batch[1].energy == pytest.approx(atoms.get_potential_energy(), abs=1e-4)
    np.testing.assert_allclose(batch[1].forces, atoms.get_forces(), atol=1e-4)
    np.testing.assert_allclose(batch[1].stress, atoms.get_stress(), atol=1e-5)
    assert [f.shape for f in forces([li2o, rattled], mlip)] == [(12, 3), (12, 3)]


def test_mattersim_checkpoint_named_like_the_official_one_is_read_locally(tiny_mattersim, tmp_path, monkeypatch):
    """MatterSim takes a bare "mattersim-v1.0.0-1M.pth" for its pretrained model and downloads it; diffase must
    read the local file of that name instead."""
    import shutil

    import mattersim.forcefield.potential as mattersim_potential

    def no_download(*args, **kwargs):
        raise AssertionError("MatterSim tried to download a checkpoint")

    monkeypatch.setattr(mattersim_potential, "download_checkpoint", no_download)
    shutil.copy(tiny_mattersim, tmp_path / "mattersim-v1.0.0-1M.pth")
    monkeypatch.chdir(tmp_path)
    mlip = load_mlip("mattersim", device="cpu", checkpoint="mattersim-v1.0.0-1M.pth")
    assert mlip.model.model.model_args["num_blocks"] == 1  # the tiny local model, not the 1M pretrained one
