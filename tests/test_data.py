"""Readers, conversions, batching and input validation."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.db import connect
from ase.io import read, write
from pymatgen.core import Lattice, Structure

from diffase.data import fields as F
from diffase.data.batch import collate, split
from diffase.data.io import append_extxyz, read_structures
from diffase.data.structures import check_elements, record_to_atoms, record_to_structure, structure_to_record
from diffase.errors import DisorderedStructureError, InvalidStructureError, UnknownElementError
from tests.helpers import rocksalt, skewed_cell


def test_reads_csv_table_with_cif_column(shared_data):
    pairs = read_structures(shared_data / "mp20" / "val.csv.gz", limit=5)
    assert len(pairs) == 5 and all(isinstance(s, Structure) for _, s in pairs)
    assert pairs[0][0].startswith("mp-")


def test_reads_extxyz_db_cif_and_lists(tmp_path):
    atoms = [bulk("Cu", cubic=True), bulk("NaCl", "rocksalt", a=5.6)]
    write(tmp_path / "x.extxyz", atoms)
    db = connect(tmp_path / "x.db")
    for a in atoms:
        db.write(a)
    rocksalt().to(filename=str(tmp_path / "nacl.cif"))
    assert [len(s) for _, s in read_structures(tmp_path / "x.extxyz")] == [4, 2]
    assert [len(s) for _, s in read_structures(tmp_path / "x.db")] == [4, 2]
    assert len(read_structures(tmp_path / "nacl.cif")[0][1]) == 8  # conventional cell from the spacegroup
    assert len(read_structures(atoms + [rocksalt()])) == 3
    assert len(read_structures(atoms[0])) == 1


def test_stream_extxyz_appends_frames_with_info(tmp_path):
    path = tmp_path / "out.extxyz"
    append_extxyz(path, [rocksalt()], [{"energy_per_atom": -3.2, "sample": 0}])
    append_extxyz(path, [bulk("Cu")], [{"energy_per_atom": -4.1, "sample": 1}])
    frames = read(path, ":")
    assert [len(a) for a in frames] == [8, 1] and frames[0].get_chemical_formula() == "Cl4Na4"
    assert [a.info["energy_per_atom"] for a in frames] == [-3.2, -4.1] and [a.info["sample"] for a in frames] == [0, 1]
    assert len(read_structures(path)) == 2


def test_record_round_trip_keeps_cell_and_species():
    s = skewed_cell()
    rec = structure_to_record(s)
    back = record_to_structure(rec)
    assert back.matches(s) and np.allclose(back.lattice.matrix, s.lattice.matrix)
    atoms = record_to_atoms(rec)
    assert atoms.get_chemical_formula() == "HLiO" and all(atoms.pbc)


def test_collate_split_round_trip():
    recs = [structure_to_record(s) for s in (rocksalt(), skewed_cell())]
    batch = collate(recs, dtype=torch.float64)
    assert batch[F.BATCH].tolist() == [0] * 8 + [1] * 3
    for rec, back in zip(recs, split(batch)):
        np.testing.assert_allclose(back[F.POSITIONS], rec[F.POSITIONS])
        np.testing.assert_array_equal(back[F.ATOMIC_NUMBERS], rec[F.ATOMIC_NUMBERS])


def test_disordered_structure_error_names_the_fix():
    s = Structure(Lattice.cubic(4), [{"Li": 0.5, "Na": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(DisorderedStructureError, match="OrderDisorderedStructureTransformation"):
        structure_to_record(s)


def test_unknown_elements_are_refused():
    s = Structure(Lattice.cubic(4), ["X0+", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(UnknownElementError, match="not a chemical element"):
        structure_to_record(s)
    with pytest.raises(UnknownElementError, match="never saw"):
        check_elements([structure_to_record(rocksalt())], allowed={3, 8})


def test_non_periodic_atoms_are_refused():
    with pytest.raises(InvalidStructureError, match="pbc"):
        structure_to_record(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7]], cell=[5, 5, 5], pbc=False))


def test_importing_diffase_loads_no_model_or_torch():
    import subprocess
    import sys

    code = "import sys, diffase; print(any(m.split('.')[0] in ('torch', 'e3nn', 'chgnet') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
