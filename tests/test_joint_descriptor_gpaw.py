"""benchmarks/joint_descriptor_gpaw.py without GPAW: site matching under a permuted label, the Bader and DOS
metrics on synthetic data, and the select-label-resume loop on the fake GPAW worker."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from ase.io import write as ase_write
from pymatgen.core import Lattice, Structure

from diffase.data.electronic.dataset import write_label
from diffase.data.electronic.dos import DOSMATGEN_WINDOW
from diffase.labeling.settings import LabelSettings
from tests.fake_gpaw import fake_gpaw_fixture  # noqa: F401 - the fake_gpaw fixture

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import joint_descriptor_gpaw as bench  # noqa: E402

GRID = DOSMATGEN_WINDOW.grid()


def _crystal() -> Structure:
    return Structure(Lattice.from_parameters(4.1, 4.3, 4.5, 88, 95, 101), ["Na", "Cl", "Na", "Cl"],
                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0.02], [0.98, 0.5, 0.0]])


def _peaks(centres) -> np.ndarray:
    return np.stack([np.exp(-0.5 * ((GRID - c) / 0.3) ** 2) for c in centres])


def _label_file(path: Path, structure: Structure, bader, dos) -> Path:
    return write_label(path, {"material_id": np.array(path.stem), "cif": np.array(structure.to(fmt="cif")),
                              "dos": np.asarray(dos, np.float32), "dos_grid": GRID.astype(np.float32),
                              "bader": np.asarray(bader, np.float32), "hirshfeld": np.zeros(len(structure), np.float32),
                              "dft_seconds": np.float64(1.0)})


def test_site_order_recovers_a_permuted_label_and_refuses_a_moved_site():
    generated = _crystal()
    perm = [2, 3, 0, 1]
    labelled = Structure(generated.lattice, [generated[i].specie for i in perm],
                         [generated[i].frac_coords + [1, 0, -1] for i in perm])  # other periodic images
    order = bench.site_order(generated, labelled)
    assert order.tolist() == [2, 3, 0, 1]
    assert [labelled[j].specie for j in order] == [site.specie for site in generated]
    moved = labelled.copy()
    moved.translate_sites([0], [0.02, 0, 0])
    with pytest.raises(ValueError, match="no labelled site"):
        bench.site_order(generated, moved)


def test_metrics_on_a_permuted_label(tmp_path):
    generated = _crystal()
    perm = [1, 3, 2, 0]  # Cl, Cl, Na, Na: pymatgen's CIF parser would read it back as Na, Na, Cl, Cl
    labelled = Structure(generated.lattice, [generated[i].specie for i in perm], [generated[i].frac_coords for i in perm])
    truth_q = np.array([0.8, -0.8, 0.7, -0.7])  # GPAW charges in generated order
    truth_dos = _peaks([-3.0, -1.0, 2.0, 4.0])
    path = _label_file(tmp_path / "sample-5-0.npz", labelled, truth_q[perm], truth_dos[perm])
    generated_q = truth_q + np.array([0.1, -0.2, 0.0, 0.3])
    sample = bench.Sample(5, generated, generated_q, truth_dos.copy())
    sites = bench.paired_sites([(sample, path)], {5: 0.05})
    np.testing.assert_allclose(sites["bader_ref"], truth_q, atol=1e-6)
    np.testing.assert_allclose(sites["dos_ref"], truth_dos, atol=1e-6)

    everything = np.ones(4, bool)
    guess = np.array([0.75, -0.75, 0.75, -0.75])
    row = bench.bader_row("all", sites, everything, guess)
    assert (row["structures"], row["sites"], row["paired_sites"]) == (1, 4, 4)
    assert row["bader_mae"] == pytest.approx(0.15, abs=1e-6)
    assert row["baseline_mae_paired"] == pytest.approx(0.05, abs=1e-6)
    no_guess = guess.copy()
    no_guess[0] = np.nan  # an element the reference labels lack is left out of the comparison, not of the MAE
    row = bench.bader_row("all", sites, everything, no_guess)
    assert (row["sites"], row["paired_sites"], row["bader_mae"]) == (4, 3, pytest.approx(0.15, abs=1e-6))
    assert row["bader_mae_paired"] == pytest.approx(0.5 / 3, abs=1e-6)

    row = bench.dos_row("all", sites, everything, _peaks([0.0, 0.0, 0.0, 0.0]))
    assert row["wasserstein"] == pytest.approx(0.0, abs=1e-6)  # identical DOS
    assert row["mae"] == pytest.approx(0.0, abs=1e-6)
    assert row["baseline_wasserstein_paired"] == pytest.approx(np.mean([3.0, 1.0, 2.0, 4.0]), abs=0.02)
    assert bench.dos_row("all", sites, everything, truth_dos, sigma=0.3)["baseline_wasserstein_paired"] == \
        pytest.approx(0.0, abs=1e-6)

    groups = dict(bench.site_groups(sites, with_stability=True))
    assert set(groups) == {"all", "E_hull <= 0.1", "Na", "Cl"} and groups["E_hull <= 0.1"].all()
    sign = bench.sign_check(sites)
    assert (sign["sites_with_abs_ref_over_0.1"], sign["same_sign"]) == (4, 4)


def test_label_samples_selects_labels_and_resumes_on_the_fake_worker(fake_gpaw, tmp_path):
    nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    frames = []
    for index, structure in [(0, Structure(Lattice.cubic(5.64), ["Na", "Tc"], [[0, 0, 0], [0.5, 0.5, 0.5]])),
                             (1, Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.01, 0, 0]])),
                             (2, nacl), (3, nacl)]:
        atoms = structure.to_ase_atoms()
        atoms.info["sample"] = index
        atoms.arrays["bader_charge"] = np.array([0.8, -0.8])
        atoms.arrays["atomic_dos"] = _peaks([-2.0, 1.0])
        frames.append(atoms)
    ase_write(str(tmp_path / "gen.extxyz"), frames, format="extxyz")
    samples = bench.read_samples(tmp_path / "gen.extxyz")
    assert [s.index for s in samples] == [0, 1, 2, 3] and samples[2].dos.shape == (2, 512)

    settings = LabelSettings.from_preset("fast")
    out = tmp_path / "labels"
    pairs, counts = bench.label_samples(samples, out, settings, n=1, max_atoms=6)
    assert [s.index for s, _ in pairs] == [2] and pairs[0][1].name == "sample-2-0.npz"
    assert counts["skipped"] == {"element without GPAW setup/basis": 1, "structurally invalid": 1}
    assert counts["tried"] == 1 and len(fake_gpaw.read_text().splitlines()) == 1

    pairs, counts = bench.label_samples(samples, out, settings, n=2, max_atoms=6, compute=False)  # report only
    assert [s.index for s, _ in pairs] == [2] and counts["unlabelled"] == 1 and counts["tried"] == 0
    pairs, counts = bench.label_samples(samples, out, settings, n=2, max_atoms=6)  # resumes sample 2, labels 3
    assert [s.index for s, _ in pairs] == [2, 3] and counts["resumed"] == ["sample-2-0"]
    assert counts["tried"] == 1 and len(fake_gpaw.read_text().splitlines()) == 2
    sites = bench.paired_sites(pairs, {})
    assert sites["sample"].tolist() == [2, 2, 3, 3] and np.isfinite(sites["bader_ref"]).all()
