"""Time-dependent site-DOS regressor on noisy crystals: the classifier of classifier guidance (DOSMatGen's
alternative to classifier-free guidance, issue 16).

The regressor is a :class:`~diffase.nn.joint_denoiser.JointDenoiser` (the joint model's trunk, no new network
class) with one extra node head, :data:`PRED_KEY`, of the DOS grid size: from atom types, noisy fractional
coordinates, noisy cell and diffusion time t it predicts every site's DOS on the grid of its ``node_condition``
(states/eV over E - E_F, after the model's transform, e.g. log1p: what the joint model's ``node_cond`` holds).
The head's input map sees zeros (the head's field is predicted, never diffused); the structure heads are unused.
Training: :mod:`diffase.train.dos_regressor_trainer`. Guidance with its gradient:
:func:`diffase.diffusion.guidance.classifier_guided_score_fn`.
"""

from __future__ import annotations

import torch

from diffase.data import fields as F
from diffase.diffusion.field_registry import FieldRegistry
from diffase.hub import cached, network_from_checkpoint, read_checkpoint
from diffase.nn.joint_denoiser import JointDenoiser, JointDenoiserConfig
from diffase.runtime import resolve_device

CHECKPOINT_KIND = "diffase-dos-regressor-v1"
#: The node head of the regressor network: (n_atoms, n_points) predicted site DOS (transformed).
PRED_KEY = "site_dos_pred"
#: The node-condition entries that fix the DOS grid and its transform (must agree with a model it guides).
GRID_KEYS = ("kind", "n_points", "e_min", "e_max", "transform")


def predict_site_dos(net: JointDenoiser, batch: dict, t: torch.Tensor) -> torch.Tensor:
    """(n_atoms, n_points) site DOS (transformed) predicted by ``net`` from the batch's types, fractional
    coordinates and cell at diffusion times ``t`` (B,) in [0, 1]; differentiable in coordinates and cell."""
    n_points = net.config.node_fields[PRED_KEY][0]
    frac = batch[F.FRAC_COORDS]
    inputs = {**batch, F.TIME: t, PRED_KEY: torch.zeros(frac.shape[0], n_points, dtype=frac.dtype, device=frac.device)}
    return net(inputs)[PRED_KEY]


def check_compatible(model_spec: dict | None, model_elements, regressor: DOSRegressor) -> None:
    """Raise ``ValueError`` unless a guided model's element vocabulary (type tokens) and per-atom condition grid
    (None: a model without one, e.g. joint-mp20) are the regressor's."""
    if list(model_elements) != regressor.elements:
        raise ValueError("the classifier's element vocabulary differs from the model's; use a classifier trained "
                         "from the guided model's prior (init_from joint-mp20 for joint-mp20 and dos-mp20)")
    if model_spec is None:
        return
    regressor_spec = regressor.node_condition
    diff = {k: (model_spec.get(k), regressor_spec.get(k)) for k in GRID_KEYS if model_spec.get(k) != regressor_spec.get(k)}
    if diff:
        raise ValueError(f"the classifier's site-DOS grid differs from the model's {diff} (model, classifier); "
                         "use a classifier trained on the model's grid (node_condition_points, e_min, e_max, "
                         "transform of its recipe)")


class DOSRegressor:
    """A regressor network and its ``node_condition`` (the DOS grid and transform it predicts on), on one device."""

    def __init__(self, net: JointDenoiser, node_condition: dict, elements, device: str | torch.device = "auto",
                 meta: dict | None = None):
        if list(net.config.node_fields) != [PRED_KEY] or net.config.node_fields[PRED_KEY] != [node_condition["n_points"]]:
            raise ValueError(f"a DOS regressor network has the one node head {PRED_KEY!r} of "
                             f"{node_condition['n_points']} points, got {net.config.node_fields}")
        self.device = resolve_device(device)
        self.net = net.to(self.device).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.node_condition = dict(node_condition)
        self.elements = [int(z) for z in elements]  #: atomic number of each type token
        self.meta = meta or {}

    @classmethod
    def from_checkpoint(cls, ckpt: dict, device: str | torch.device = "auto") -> DOSRegressor:
        net, meta = network_from_checkpoint(ckpt, CHECKPOINT_KIND, JointDenoiser, JointDenoiserConfig,
                                            keep_out=("node_condition", "elements"))
        return cls(net, ckpt["node_condition"], ckpt["elements"], device, meta)

    def level_fn(self, fields: FieldRegistry):
        """``(batch, level) -> (n_atoms, n_points)`` predictions at the time of ``level`` under ``fields``' level
        grid (gradients flow, for guidance)."""

        def fn(batch: dict, level: int) -> torch.Tensor:
            n_graph = batch[F.NUM_ATOMS].shape[0]
            t = torch.full((n_graph,), fields.time_at(level), dtype=batch[F.CELL].dtype, device=self.device)
            return predict_site_dos(self.net, batch, t)

        return fn


def load_dos_regressor(name, device: str | torch.device = "auto") -> DOSRegressor:
    """A regressor by name (``models/<name>.pt``) or path, cached per device; a loaded one is returned as is."""
    if isinstance(name, DOSRegressor):
        return name
    dev = resolve_device(device)
    return cached(name, dev, lambda: DOSRegressor.from_checkpoint(read_checkpoint(name), dev))
