"""The fields a joint model can generate: the structure (A/X/L) and per-site descriptors, as registry entries.

Every joint model generates atom types (``"types"``: absorbing D3PM on ``type_tokens``), fractional
coordinates (``"coords"``: wrapped normal on ``frac_coords``) and the lattice (``"lattice"``: DDPM on
``cell``), with the papers' settings (T = 1000 training steps). Descriptor fields add to these
(:data:`DESCRIPTOR_FIELDS`); a model's fields are a :class:`~diffase.diffusion.field_registry.FieldRegistry`
stored in its checkpoint.

* ``"bader_charge"``: the Bader charge of every site, e (positive = electron loss), diffused with a DDPM
  beside A/X/L (Okuda, Takahara & Mizoguchi 2026), sampled under progressive charge neutrality
  (:class:`~diffase.diffusion.constraints.ChargeNeutrality`), so each generated crystal has zero total charge.
* ``"ados_latent"``: the atomic-DOS latent of every site, (n_atoms, 30) in [-1, 1]: the encoder of a frozen
  atomic-DOS autoencoder (:mod:`diffase.nn.dos_autoencoder`) applied to the site DOS labels, diffused with a DDPM,
  sampled under the progressive range restriction (:class:`~diffase.diffusion.constraints.LatentRange`); the
  generator decodes it to ``atomic_dos`` (states/eV on the autoencoder's grid).
* ``"dummy_descriptor"``: a random per-site scalar with no physics (N(0, 1), seeded per crystal and site:
  :func:`diffase.data.descriptor_records.dummy_values`), diffused the same way: the control of the ablation.

Grid fields (:data:`GRID_FIELDS`) have one row per crystal:

* ``"density_latent"``: ChargeDIFF's charge-density field, (n, n, n, d) per crystal (8^3 x d for 32^3 densities):
  the pre-quantisation latent (standardised per channel) of a frozen density VQ-VAE (:mod:`diffase.nn.vqvae3d`) of
  the valence density on the crystal's (Niggli-reduced) cell, channels last, voxel m at the fractional point m/n;
  DDPM, no constraint
  (Park, Choi & Jung 2025: loss weights A 10, X 1, L 1, C 1). The network sees it through probe nodes
  (:mod:`diffase.nn.probe_branch`); the generator decodes it to ``charge_density`` (e/Angstrom^3) through the
  VQ-VAE, quantisation included.
"""

from __future__ import annotations

from collections.abc import Sequence

from diffase.data import fields as F
from diffase.diffusion.constraints import ChargeNeutrality, LatentRange
from diffase.diffusion.d3pm import AbsorbingD3PM
from diffase.diffusion.ddpm import DDPM, LatticeDDPM
from diffase.diffusion.field_registry import DiffusedField, FieldRegistry
from diffase.diffusion.wrapped_normal import WrappedNormalProcess

#: Names of the three structure fields, in sampling order.
STRUCTURE_FIELDS = ("types", "coords", "lattice")


def structure_fields(num_elements: int, weights: Sequence[float] = (1.0, 1.0, 1.0)) -> list[DiffusedField]:
    """Types, coordinates and lattice over ``num_elements`` element tokens, with loss ``weights`` (A, X, L)."""
    processes = (AbsorbingD3PM(num_elements), WrappedNormalProcess(), LatticeDDPM())
    return [DiffusedField(name, proc, float(w)) for name, proc, w in zip(STRUCTURE_FIELDS, processes, weights, strict=True)]


def bader_field(loss_weight: float = 1.0, neutrality_power: float = 1.0) -> DiffusedField:
    """Per-site Bader charges (n_atoms,) e: DDPM, charge neutrality with strength ``(1 - t)^neutrality_power``."""
    return DiffusedField("bader_charge", DDPM(key=F.BADER_CHARGE), loss_weight,
                         ChargeNeutrality(F.BADER_CHARGE, neutrality_power))


#: Dimension of the atomic-DOS latent (the autoencoder's ``latent_dim``, 30 in the paper).
ADOS_LATENT_DIM = 30


def ados_field(loss_weight: float = 1.0, range_power: float = 1.0) -> DiffusedField:
    """Per-site atomic-DOS latents (n_atoms, 30) in [-1, 1]: DDPM, range restriction with strength
    ``(1 - t)^range_power``."""
    return DiffusedField("ados_latent", DDPM(key=F.ADOS_LATENT, row_shape=(ADOS_LATENT_DIM,)), loss_weight,
                         LatentRange(F.ADOS_LATENT, range_power))


def dummy_field(loss_weight: float = 1.0) -> DiffusedField:
    """A random per-site scalar (n_atoms,) with no physics, DDPM, no constraint: the ablation's control field."""
    return DiffusedField("dummy_descriptor", DDPM(key=F.DUMMY_DESCRIPTOR), loss_weight)


#: Descriptor fields by name: a function of the loss weight returning the field.
DESCRIPTOR_FIELDS = {"bader_charge": bader_field, "ados_latent": ados_field, "dummy_descriptor": dummy_field}


def density_field(loss_weight: float = 1.0, row_shape: Sequence[int] = (8, 8, 8, 3)) -> DiffusedField:
    """The charge-density latent (n, n, n, d) per crystal (``row_shape`` from the VQ-VAE: n = grid / 4, d =
    latent_dim), DDPM."""
    if len(row_shape) != 4 or len(set(row_shape[:3])) != 1:
        raise ValueError(f"a density latent row is (n, n, n, d), got {tuple(row_shape)}")
    return DiffusedField("density_latent", DDPM(key=F.DENSITY_LATENT, row_shape=tuple(row_shape)), loss_weight)


#: Grid fields by name: a function of the loss weight and the row shape returning the field.
GRID_FIELDS = {"density_latent": density_field}


def grid_fields(weights: dict[str, float] | None, row_shapes: dict[str, Sequence[int]]) -> list[DiffusedField]:
    """The fields named in :data:`GRID_FIELDS` with their loss weights (``{"density_latent": 1.0}``) and row
    shapes (``{"density_latent": (8, 8, 8, 3)}``, from the frozen VQ-VAE)."""
    unknown = sorted(set(weights or {}) - set(GRID_FIELDS))
    if unknown:
        raise ValueError(f"unknown grid field(s) {unknown}; known: {', '.join(GRID_FIELDS)}")
    return [GRID_FIELDS[name](float(w), row_shapes[name]) for name, w in (weights or {}).items()]


def descriptor_fields(weights: dict[str, float] | None) -> list[DiffusedField]:
    """The fields named in :data:`DESCRIPTOR_FIELDS`, each with its loss weight (``{"bader_charge": 1.0}``)."""
    unknown = sorted(set(weights or {}) - set(DESCRIPTOR_FIELDS))
    if unknown:
        raise ValueError(f"unknown descriptor field(s) {unknown}; known: {', '.join(DESCRIPTOR_FIELDS)}")
    return [DESCRIPTOR_FIELDS[name](float(w)) for name, w in (weights or {}).items()]


def joint_fields(num_elements: int, weights: Sequence[float] = (1.0, 1.0, 1.0),
                 descriptors: dict[str, float] | None = None, grids: dict[str, float] | None = None,
                 grid_shapes: dict[str, Sequence[int]] | None = None) -> FieldRegistry:
    """A/X/L with loss ``weights`` plus the :func:`descriptor_fields` of ``descriptors`` and the
    :func:`grid_fields` of ``grids`` (row shapes ``grid_shapes``)."""
    return FieldRegistry(structure_fields(num_elements, weights) + descriptor_fields(descriptors)
                         + grid_fields(grids, grid_shapes or {}))


def _extra_row_shapes(fields: FieldRegistry, kind: str) -> dict[str, list[int]]:
    extra = [f for f in fields if f.name not in STRUCTURE_FIELDS]
    if any(f.kind not in ("node", "grid") for f in extra):
        raise ValueError("the joint denoiser has heads for extra node and grid fields only; a generated graph "
                         "field needs its own encoder and head")
    return {f.key: list(f.process.row_shape) for f in extra if f.kind == kind}


def descriptor_row_shapes(fields: FieldRegistry) -> dict[str, list[int]]:
    """The denoiser's ``node_fields`` for ``fields``: batch key -> row shape of every extra node field."""
    return _extra_row_shapes(fields, "node")


def grid_row_shapes(fields: FieldRegistry) -> dict[str, list[int]]:
    """The denoiser's ``grid_fields`` for ``fields``: batch key -> row shape (n, n, n, d) of every grid field."""
    return _extra_row_shapes(fields, "grid")


def fields_from_checkpoint(ckpt: dict) -> FieldRegistry:
    """A checkpoint's fields: its ``fields`` list, or for checkpoints written before the field registry
    (``joint-mp20``) its three ``processes`` as types / coords / lattice with loss weight 1."""
    if "fields" in ckpt:
        return FieldRegistry.from_list(ckpt["fields"])
    p = ckpt["processes"]
    classes = (AbsorbingD3PM, WrappedNormalProcess, LatticeDDPM)
    return FieldRegistry([DiffusedField(name, cls(**p[name])) for name, cls in zip(STRUCTURE_FIELDS, classes)])
