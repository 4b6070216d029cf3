"""Training (resumable), checkpoint round trip, the offline registry and the CLI."""

import pytest
import torch

from diffase import hub
from diffase.cli import main
from diffase.data import fields as F
from diffase.data.batch import collate
from diffase.data.structures import structure_to_record
from diffase.errors import CheckpointNotFoundError, UnknownElementError
from diffase.generators import load_model
from diffase.generators.score_model import ScoreModel
from diffase.train.score_trainer import TrainConfig, train_score_model
from tests.helpers import rocksalt, tiny_config


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DIFFASE_CACHE", str(tmp_path_factory.getbasetemp() / "record-cache"))
    hub._CACHE.clear()


def _train(shared_data, out, **kw):
    config = TrainConfig(epochs=kw.pop("epochs", 1), batch_size=8, max_val=8, warmup_steps=2, **kw)
    return train_score_model(shared_data / "mp20" / "train.csv.gz", shared_data / "mp20" / "val.csv.gz", out,
                             model_config=tiny_config(), config=config, device="cpu", num_threads=1,
                             limit_train=24, progress=False)


def test_training_resumes_exactly_where_it_stopped(shared_data, tmp_path, monkeypatch):
    """A run stopped after 2 steps and started again takes only the 3 missing steps and ends bit for bit where
    an uninterrupted run of 5 steps ends (a run that restarted from scratch would end there too: hence the
    count of training steps)."""
    import diffase.train.score_trainer as score_trainer

    training_steps = []  # one entry per loss evaluated with gradients (validation runs without)
    real_loss = score_trainer.dsm_loss

    def counting_loss(*args, **kwargs):
        training_steps.append(torch.is_grad_enabled())
        return real_loss(*args, **kwargs)

    _train(shared_data, tmp_path / "a", max_steps=2)
    assert torch.load(tmp_path / "a" / "last.pt", weights_only=True)["step"] == 2
    monkeypatch.setattr(score_trainer, "dsm_loss", counting_loss)
    _train(shared_data, tmp_path / "a", max_steps=5, epochs=2)  # resumes mid-epoch 1
    assert sum(training_steps) == 3
    _train(shared_data, tmp_path / "b", max_steps=5, epochs=2)  # uninterrupted
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 5 and a["epoch"] == b["epoch"] == 1
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0)
    log = (tmp_path / "a" / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,step,train_loss,val_loss") and len(log) == 2


def test_checkpoint_round_trip_and_named_lookup(shared_data, tmp_path, monkeypatch):
    best = _train(shared_data, tmp_path / "run")
    model = load_model(best, device="cpu")
    assert isinstance(model, ScoreModel) and model.meta["train"]["n_train"] == 24
    rec = structure_to_record(rocksalt())
    batch = collate([rec])
    out1 = model.score_fn()(dict(batch), 10)[F.POSITIONS]

    saved = tmp_path / "models" / "my-model.pt"
    saved.parent.mkdir()
    torch.save(model.to_checkpoint(), saved)
    monkeypatch.setenv("DIFFASE_MODELS", str(saved.parent))
    again = load_model("my-model", device="cpu")
    assert again is not model
    torch.testing.assert_close(again.score_fn()(dict(batch), 10)[F.POSITIONS], out1)
    assert load_model("my-model", device="cpu") is again  # cached per process and device
    assert "my-model" in hub.list_models()


def test_missing_checkpoint_names_every_place_searched(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFASE_MODELS", str(tmp_path))
    with pytest.raises(CheckpointNotFoundError) as err:
        load_model("no-such-model")
    assert str(tmp_path) in str(err.value) and "models" in str(err.value)
    with pytest.raises(CheckpointNotFoundError):
        load_model(tmp_path / "missing.pt")


def test_sampling_refuses_elements_the_model_never_saw(shared_data, tmp_path):
    model = load_model(_train(shared_data, tmp_path / "run"), device="cpu")
    unseen = next(z for z in range(90, 101) if z not in model.elements)
    rec = structure_to_record(rocksalt())
    rec[F.ATOMIC_NUMBERS][0] = unseen
    with pytest.raises(UnknownElementError, match="never saw"):
        next(iter(model.sample_positions([rec], num_levels=3)))


def test_cli_train_and_models(shared_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DIFFASE_MODELS", str(tmp_path / "run"))
    code = main(["train", str(shared_data / "mp20" / "train.csv.gz"), str(shared_data / "mp20" / "val.csv.gz"),
                 "--out", str(tmp_path / "run"), "--max-steps", "1", "--limit-train", "8", "--max-val", "4",
                 "--device", "cpu", "--threads", "1"])
    assert code == 0 and (tmp_path / "run" / "best.pt").exists()
    assert main(["models"]) == 0
    assert "best" in capsys.readouterr().out
