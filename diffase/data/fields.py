"""The one registry of batch field names.

Every model, process and converter in diffase reads and writes a plain ``dict[str, Tensor]`` (a *batch*),
with keys taken from this module. Many crystals are batched into one flat graph: node fields are stacked
over all atoms of all crystals, graph fields over crystals (one array per crystal, any trailing shape),
grid fields over crystals too (one (G, G, G) grid per crystal, laid along its cell, optionally with trailing
channels), edge fields over all edges.

New modalities (charge grids, site DOS, conditions) add keys here; they never add new data classes.
"""

from __future__ import annotations

# --- node fields: one row per atom, shape (n_atoms, ...) ---------------------------------------------
ATOMIC_NUMBERS = "atomic_numbers"  #: (n_atoms,) int64, Z
POSITIONS = "pos"  #: (n_atoms, 3) float, Cartesian coordinates, Angstrom
FRAC_COORDS = "frac_coords"  #: (n_atoms, 3) float, fractional coordinates in [0, 1)
BATCH = "batch"  #: (n_atoms,) int64, index of the crystal each atom belongs to
KNOWN_MASK = "known_mask"  #: (n_atoms,) bool, True for atoms whose positions are given (inpainting host)
TYPE_TOKENS = "type_tokens"  #: (n_atoms,) int64, a model's element token 0..K-1, or K = the absorbing mask token
NODE_COND = "node_cond"  #: (n_atoms, d) float, per-atom conditions fed to the joint denoiser's node embedding

# --- graph fields: one row per crystal, shape (n_crystals, ...) --------------------------------------
CELL = "cell"  #: (n_crystals, 3, 3) float, lattice vectors as rows, Angstrom
NUM_ATOMS = "num_atoms"  #: (n_crystals,) int64
SIGMA = "sigma"  #: (n_crystals,) float, noise level of the VE process, Angstrom
TIME = "t"  #: (n_crystals,) float in [0, 1], diffusion time of the joint model's fields (types, coords, lattice, descriptors)

#: Graph-level conditions are keys ``"cond:<name>"`` (see :func:`condition_key`): (n_crystals,) float for a
#: scalar or a class index, (n_crystals, d) float for a multi-hot vector; NaN marks "not given" (unconditional).
CONDITION_PREFIX = "cond:"

# --- edge fields: one row per directed edge, shape (n_edges, ...) ------------------------------------
EDGE_INDEX = "edge_index"  #: (2, n_edges) int64, [source, target] atom indices
EDGE_CELL_SHIFT = "edge_cell_shift"  #: (n_edges, 3) float, integer image offset of the target, in cells

NODE_FIELDS = frozenset({ATOMIC_NUMBERS, POSITIONS, FRAC_COORDS, BATCH, KNOWN_MASK, TYPE_TOKENS, NODE_COND})
GRAPH_FIELDS = frozenset({CELL, NUM_ATOMS, SIGMA, TIME})
EDGE_FIELDS = frozenset({EDGE_INDEX, EDGE_CELL_SHIFT})

# --- electronic-structure fields (diffase.data.electronic) -------------------------------------------
SITE_DOS = "site_dos"  #: (n_atoms, n_energies) float, site DOS summed over spins, states/eV, on an E - E_F grid
BADER_CHARGE = "bader_charge"  #: (n_atoms,) float, Bader charge, e (positive = electron loss; NaN = unknown)
HIRSHFELD_CHARGE = "hirshfeld_charge"  #: (n_atoms,) float, Hirshfeld charge, e (positive = electron loss)
CHARGE_DENSITY = "charge_density"  #: (n_crystals, N, N, N) float, valence density on the cell grid, e/Angstrom^3
ADOS_LATENT = "ados_latent"  #: (n_atoms, d) float in [-1, 1], atomic-DOS autoencoder latent of each site (d = 30)
ATOMIC_DOS = "atomic_dos"  #: (n_atoms, P) float, atomic DOS decoded from ``ados_latent``, states/eV, autoencoder grid
DUMMY_DESCRIPTOR = "dummy_descriptor"  #: (n_atoms,) float, random per-site control variable (no physics), N(0, 1)
NODE_FIELDS = NODE_FIELDS | {SITE_DOS, BADER_CHARGE, HIRSHFELD_CHARGE, ADOS_LATENT, ATOMIC_DOS, DUMMY_DESCRIPTOR}
#: Per-site descriptors that travel with their sites out of diffase: pymatgen ``site_properties`` and ASE
#: ``atoms.arrays`` under the same names (:func:`diffase.data.structures.record_to_structure`).
SITE_DESCRIPTORS = frozenset({BADER_CHARGE, HIRSHFELD_CHARGE, SITE_DOS, ADOS_LATENT, ATOMIC_DOS, DUMMY_DESCRIPTOR})

# --- grid fields: one (G, G, G) grid per crystal, shape (n_crystals, G, G, G, ...) -------------------
#: (n_crystals, n, n, n, d) float, pre-quantisation latent of a frozen density VQ-VAE (:mod:`diffase.nn.vqvae3d`,
#: channels last, standardised per channel; n = G/4, 8 for 32^3 densities): voxel m at the fractional point m/n
DENSITY_LATENT = "density_latent"
GRID_FIELDS = frozenset({CHARGE_DENSITY, DENSITY_LATENT})


def condition_key(name: str) -> str:
    """Batch key of the graph-level condition ``name`` (e.g. ``"band_gap"`` -> ``"cond:band_gap"``)."""
    return CONDITION_PREFIX + name


def field_kind(key: str) -> str:
    """Return ``"node"``, ``"graph"``, ``"grid"`` or ``"edge"`` for a registered key; raise ``KeyError`` otherwise.

    Graph and grid fields both have one row per crystal (the first axis); a grid's row is a (G, G, G) array
    (plus channels).
    """
    if key.startswith(CONDITION_PREFIX):
        return "graph"
    for kind, fields in (("node", NODE_FIELDS), ("graph", GRAPH_FIELDS), ("grid", GRID_FIELDS),
                         ("edge", EDGE_FIELDS)):
        if key in fields:
            return kind
    raise KeyError(f"{key!r} is not a registered batch field (see diffase.data.fields)")
