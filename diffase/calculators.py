"""Machine-learned interatomic potentials (MLIPs) as ASE calculators, chosen by name and loaded lazily.

``get_calculator("chgnet")`` returns a fresh ASE calculator; every calculator made for the same
(name, checkpoint, device) shares one model instance per process, loaded on first use (importing diffase
loads nothing). :func:`load_mlip` returns that shared :class:`MLIP`, which also evaluates many structures in
one batched call (:meth:`MLIP.predict`), what sampling loops need when they ask for forces repeatedly.

Potentials
----------
``"chgnet"``
    CHGNet 0.3.0 (Deng et al. 2023); its weights ship inside the ``chgnet`` wheel. Trained on MPtrj, whose
    energies include the Materials Project 2020 corrections, so CHGNet energies sit on the MP2020-compatible
    scale (see :mod:`diffase.analysis.stability` for what that does and does not cover).
``"mattersim"``
    MatterSim (M3GNet architecture; Yang et al. 2024), an optional extra installed with
    ``pip install --no-deps mattersim==1.2.3``. diffase never downloads its weights: pass ``checkpoint=PATH``
    or set ``DIFFASE_MATTERSIM_CHECKPOINT`` to a local ``.pth`` file.

Units everywhere: energies in eV, forces in eV/Angstrom, stresses in eV/Angstrom^3 (ASE sign convention,
Voigt order xx, yy, zz, yz, xz, xy).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.stress import full_3x3_to_voigt_6_stress
from ase.units import GPa

from diffase.errors import CheckpointNotFoundError
from diffase.runtime import configure_threads, resolve_device

#: Names :func:`get_calculator` and :func:`load_mlip` accept.
CALCULATOR_NAMES = ("chgnet", "mattersim")

#: Environment variable holding the path of a local MatterSim checkpoint.
MATTERSIM_CHECKPOINT_ENV = "DIFFASE_MATTERSIM_CHECKPOINT"

_LOADED: dict[tuple[str, str, str], MLIP] = {}


class MLIP:
    """One loaded potential, shared by every ASE calculator made from it.

    Subclasses implement :meth:`calculator` (a new ASE calculator wrapping the shared model) and
    :meth:`predict` (batched single points).
    """

    #: Name of the potential (one of :data:`CALCULATOR_NAMES`).
    name: str

    def __init__(self, model, device: str):
        self.model = model
        self.device = device

    def calculator(self) -> Calculator:
        """A new ASE calculator using the shared model (one per ``Atoms``: NEB images need their own)."""
        raise NotImplementedError

    def predict(self, atoms: Sequence[Atoms], *, stress: bool = False, batch_size: int = 16) -> list[dict]:
        """Energies and forces (and stresses) of many structures, evaluated ``batch_size`` at a time.

        Returns one dict per structure: ``energy`` (float, eV), ``forces`` ((n, 3) float64, eV/Angstrom)
        and, if ``stress``, ``stress`` ((6,) float64, eV/Angstrom^3, Voigt, ASE sign).
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.device!r})"


class CHGNetPotential(MLIP):
    """CHGNet with weights from its wheel; see :mod:`diffase.calculators`."""

    name = "chgnet"

    @classmethod
    def load(cls, device: str) -> CHGNetPotential:
        from chgnet.model import CHGNet

        with contextlib.redirect_stdout(io.StringIO()):  # "CHGNet v0.3.0 initialized ..." even with verbose=False
            return cls(CHGNet.load(use_device=device, verbose=False), device)

    def calculator(self) -> Calculator:
        with contextlib.redirect_stdout(io.StringIO()):  # CHGNetCalculator prints its device on every init
            return _chgnet_calculator_class()(model=self.model, use_device=self.device)

    def predict(self, atoms: Sequence[Atoms], *, stress: bool = False, batch_size: int = 16) -> list[dict]:
        from pymatgen.io.ase import AseAtomsAdaptor

        if not atoms:
            return []
        structures = [AseAtomsAdaptor.get_structure(a) for a in atoms]
        preds = self.model.predict_structure(structures, task="efs" if stress else "ef", batch_size=batch_size)
        preds = [preds] if isinstance(preds, dict) else preds  # one structure comes back as a bare dict
        out = []
        for s, p in zip(structures, preds):
            rec = {"energy": float(p["e"]) * len(s), "forces": np.asarray(p["f"], dtype=np.float64)}
            if stress:
                rec["stress"] = full_3x3_to_voigt_6_stress(np.asarray(p["s"], dtype=np.float64)) * GPa
            out.append(rec)
        return out


@lru_cache(maxsize=1)
def _chgnet_calculator_class():
    """CHGNet's ASE calculator, asking the model only for what ASE requested (no stress: about 40% faster)."""
    from chgnet.model.dynamics import CHGNetCalculator

    class LeanCHGNetCalculator(CHGNetCalculator):
        def calculate(self, atoms=None, properties=None, system_changes=None, task=None):
            properties = properties or ["energy", "forces", "stress"]
            task = task or ("efs" if "stress" in properties else "ef")
            super().calculate(atoms, properties, system_changes, task=task)

    return LeanCHGNetCalculator


class MatterSimPotential(MLIP):
    """MatterSim from a local checkpoint; see :mod:`diffase.calculators`."""

    name = "mattersim"

    @classmethod
    def load(cls, device: str, checkpoint: Path) -> MatterSimPotential:
        try:
            from mattersim.forcefield.potential import Potential
        except ImportError as exc:
            raise ImportError(
                "the 'mattersim' calculator needs the mattersim package: pip install --no-deps mattersim==1.2.3 "
                "plus its runtime deps (pip install 'diffase[mattersim]'); "
                f"importing it failed with: {exc}"
            ) from exc
        # load_training_state=False: inference only. torch>=2.6 reads the file with weights_only=True.
        potential = Potential.from_checkpoint(str(checkpoint), device=device, load_training_state=False)
        return cls(potential, device)

    def calculator(self) -> Calculator:
        from mattersim.forcefield.potential import MatterSimCalculator

        return MatterSimCalculator(potential=self.model, device=self.device)

    def predict(self, atoms: Sequence[Atoms], *, stress: bool = False, batch_size: int = 16) -> list[dict]:
        from mattersim.datasets.utils.build import build_dataloader

        if not atoms:
            return []
        args = self.model.model.model_args
        loader = build_dataloader(list(atoms), cutoff=args["cutoff"], threebody_cutoff=args["threebody_cutoff"],
                                  batch_size=batch_size, only_inference=True)
        energies, forces, stresses = self.model.predict_properties(loader, include_forces=True,
                                                                   include_stresses=stress)
        out = []
        for i, (e, f) in enumerate(zip(energies, forces)):
            rec = {"energy": float(e), "forces": np.asarray(f, dtype=np.float64)}
            if stress:  # MatterSim returns GPa
                rec["stress"] = full_3x3_to_voigt_6_stress(np.asarray(stresses[i], dtype=np.float64)) * GPa
            out.append(rec)
        return out


def mattersim_checkpoint(checkpoint: str | os.PathLike | None = None) -> Path:
    """Absolute path of the MatterSim checkpoint: the argument, else ``$DIFFASE_MATTERSIM_CHECKPOINT``.

    Raises :class:`CheckpointNotFoundError` saying how to provide one (diffase never downloads weights).
    """
    given = checkpoint if checkpoint is not None else os.environ.get(MATTERSIM_CHECKPOINT_ENV)
    if not given:
        raise CheckpointNotFoundError(
            "the 'mattersim' calculator needs a local MatterSim checkpoint and diffase never downloads one: "
            f"pass checkpoint='/path/to/mattersim-v1.0.0-1M.pth' or set {MATTERSIM_CHECKPOINT_ENV}=/path/to/it. "
            "The official checkpoints are published by microsoft/mattersim (MIT licence)."
        )
    path = Path(given).expanduser()
    if not path.is_file():
        source = "checkpoint argument" if checkpoint is not None else MATTERSIM_CHECKPOINT_ENV
        raise CheckpointNotFoundError(f"MatterSim checkpoint {path} (from {source}) does not exist")
    # absolute: MatterSim treats a bare "mattersim-v1.0.0-1M.pth" (or -5M) as the name of its pretrained model and
    # downloads it into ~/.local/mattersim instead of reading the local file
    return path.resolve()


def load_mlip(name: str = "chgnet", device: str = "auto", *, checkpoint: str | os.PathLike | None = None,
              num_threads: int | None = None) -> MLIP:
    """Return the process-wide shared potential ``name``, loading it on first use.

    ``device``: ``"auto"`` (CUDA if present, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    ``checkpoint``: MatterSim only, a local ``.pth`` path (else ``$DIFFASE_MATTERSIM_CHECKPOINT``).
    ``num_threads``: torch CPU threads (see :func:`diffase.runtime.configure_threads`).
    """
    key_name = str(name).lower()
    if key_name not in CALCULATOR_NAMES:
        raise ValueError(
            f"unknown calculator {name!r}; valid names are {', '.join(map(repr, CALCULATOR_NAMES))}, "
            "or pass an ASE Calculator instance"
        )
    if checkpoint is not None and key_name != "mattersim":
        raise ValueError(f"checkpoint= applies to 'mattersim' only; {key_name!r} ships its own weights")
    dev = resolve_device(device)
    if dev.type == "cpu":
        configure_threads(num_threads)
    ckpt = mattersim_checkpoint(checkpoint) if key_name == "mattersim" else None
    key = (key_name, str(dev), str(ckpt) if ckpt else "")
    if key not in _LOADED:
        if key_name == "chgnet":
            _LOADED[key] = CHGNetPotential.load(str(dev))
        else:
            _LOADED[key] = MatterSimPotential.load(str(dev), ckpt)
    return _LOADED[key]


def resolve_potential(calculator: str | Calculator | MLIP = "chgnet", device: str = "auto",
                      **kw) -> MLIP | Calculator:
    """A name becomes the shared :class:`MLIP` (see :func:`load_mlip`); an MLIP or ASE calculator is returned
    as is. Entry points take any of the three and call this once."""
    if isinstance(calculator, (Calculator, MLIP)):
        return calculator
    if not isinstance(calculator, str):
        raise TypeError(f"calculator must be a name, an MLIP or an ASE Calculator, got {type(calculator).__name__}")
    return load_mlip(calculator, device, **kw)


def get_calculator(calculator: str | Calculator | MLIP = "chgnet", device: str = "auto", **kw) -> Calculator:
    """An ASE calculator: a name from :data:`CALCULATOR_NAMES`, a loaded :class:`MLIP`, or an ASE
    ``Calculator`` (returned as is). ``**kw`` go to :func:`load_mlip` (``checkpoint``, ``num_threads``).

    Each call by name returns a new calculator object around the one shared model, so several ``Atoms``
    (e.g. NEB images) can each hold their own.
    """
    potential = resolve_potential(calculator, device, **kw)
    return potential if isinstance(potential, Calculator) else potential.calculator()
