"""State dicts are read without unpickling objects: payloads are refused and never run."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from pipeline.errors import ModelError
from tests.unet.builders import tiny_unet, unet_card
from unet.card import load_card
from unet.checkpoints import fit, read_state_dict
from unet.loaders import load_network


class CreatesAFile:
    """Unpickling this creates ``marker``: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.marker), "w")


class RunsAShellCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("payload", [CreatesAFile, RunsAShellCommand])
@pytest.mark.parametrize("writer", ["torch.save", "pickle-protocol-2", "pickle-protocol-4"])
def test_a_malicious_pickle_is_refused_and_its_payload_never_runs(
    tmp_path: Path, payload: type[CreatesAFile | RunsAShellCommand], writer: str
) -> None:
    marker = tmp_path / "pwned"
    checkpoint = {"state_dict": {"weight": torch.zeros(2)}, "hook": payload(marker)}
    path = tmp_path / "model.pt"
    if writer == "torch.save":
        torch.save(checkpoint, path)
    else:
        path.write_bytes(pickle.dumps(checkpoint, protocol=int(writer[-1])))
    card = load_card(unet_card(tmp_path, "monai", "model.pt"))
    with pytest.raises(ModelError) as excinfo:
        load_network(card, torch.device("cpu"))
    message = str(excinfo.value)
    assert message.startswith(f"{path}: refused: ")
    assert "would need unsafe unpickling" in message
    assert not marker.exists()


def test_the_refusal_names_the_global_the_file_wanted(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"hook": RunsAShellCommand(tmp_path / "pwned")}, path)
    with pytest.raises(ModelError, match=r"it refers to (posix|os|nt)\.system"):
        read_state_dict(path)


def test_a_whole_pickled_module_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(tiny_unet(), path)
    with pytest.raises(
        ModelError, match=r"unsafe unpickling \(it refers to monai\.networks\.nets\.unet\.UNet\)"
    ):
        read_state_dict(path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"definitely not a checkpoint", r"refused: not a weights-only PyTorch file \(Unsupported operand"),
        ([1, 2, 3], "no state dict found: the file holds a list"),
        ({"epoch": 3, "optimizer": {"lr": 0.1}}, r"no state dict found: .* top-level keys are \['epoch'"),
    ],
)
def test_files_without_a_state_dict_say_what_they_hold(
    tmp_path: Path, content: bytes | object, problem: str
) -> None:
    path = tmp_path / "model.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(ModelError, match=rf"{path.name}: {problem}"):
        read_state_dict(path)


def test_module_prefix_is_stripped_even_when_nested(tmp_path: Path) -> None:
    network = tiny_unet()
    state = {f"module.module.{key}": value for key, value in network.state_dict().items()}
    assert set(fit(network, state, tmp_path / "x.pt")) == set(network.state_dict())


def test_a_shared_prefix_is_kept_when_stripping_it_would_not_fit(tmp_path: Path) -> None:
    network = tiny_unet()
    state = {f"encoder.{key}": value for key, value in network.state_dict().items()}
    state["encoder.extra"] = torch.zeros(1)
    with pytest.raises(ModelError, match=r"missing keys \['model\.0\."):
        fit(network, state, tmp_path / "x.pt")
