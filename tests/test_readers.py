"""Structure files that cannot be read give one error naming the file and the problem (issue 11, item 7)."""

import pytest
from pymatgen.core import Lattice, Structure

from diffase.data.io import read_structures
from diffase.errors import DisorderedStructureError, StructureReadError


def nacl() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.6), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture
def cif_text() -> str:
    return nacl().to(fmt="cif")


@pytest.mark.parametrize("keep", [420, 1 / 3])  # 420 characters: pymatgen raises ZeroDivisionError
def test_truncated_cif_names_the_file(tmp_path, cif_text, keep):
    path = tmp_path / "cut.cif"
    path.write_text(cif_text[: keep if isinstance(keep, int) else int(len(cif_text) * keep)])
    with pytest.raises(StructureReadError, match="cut.cif"):
        read_structures(path)


@pytest.mark.parametrize("name,content", [("empty.cif", ""), ("junk.cif", "\x00\x01 not a cif \xff"),
                                          ("empty.extxyz", ""), ("junk.extxyz", "3\nnonsense\nNa 0 0\n"),
                                          ("POSCAR", "nothing here\n")])
def test_empty_or_corrupt_files_name_the_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(StructureReadError, match=name):
        read_structures(path)


def test_nan_coordinates_name_the_file_and_the_site(tmp_path, cif_text):
    lines = cif_text.splitlines()
    row = next(i for i, line in enumerate(lines) if line.strip().startswith("Cl"))
    parts = lines[row].split()
    parts[4] = "nan"  # fract_x of the first Cl
    lines[row] = "  " + " ".join(parts)
    path = tmp_path / "nan.cif"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(StructureReadError, match=r"nan\.cif"):  # pymatgen drops the block: "no structures"
        read_structures(path)
    poscar = tmp_path / "POSCAR"
    poscar.write_text("NaCl\n1.0\n4 0 0\n0 4 0\n0 0 4\nNa Cl\n1 1\ndirect\n0 0 0\nnan 0.5 0.5\n")
    with pytest.raises(StructureReadError, match=r"POSCAR.*non-finite.*site\(s\) 1"):
        read_structures(poscar)
    xyz = tmp_path / "nan.extxyz"
    xyz.write_text('2\nLattice="4 0 0 0 4 0 0 0 4" Properties=species:S:1:pos:R:3 pbc="T T T"\n'
                   "Na 0 0 0\nCl nan 2 2\n")
    with pytest.raises(StructureReadError, match=r"nan\.extxyz.*non-finite"):
        read_structures(xyz)


def test_a_crystal_error_keeps_its_class_and_gains_the_file_name(tmp_path):
    s = nacl()
    s.replace(0, {"Na": 0.5, "K": 0.5})
    path = tmp_path / "mixed.cif"
    s.to(filename=str(path))
    with pytest.raises(DisorderedStructureError, match="mixed.cif.*disordered"):
        read_structures(path)


def test_a_readable_file_still_reads(tmp_path):
    path = tmp_path / "ok.cif"
    nacl().to(filename=str(path))
    [(name, s)] = read_structures(path)
    assert name == "ok" and s.composition.reduced_formula == "NaCl"
