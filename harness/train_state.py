"""Training state after an epoch, so that a run can stop and later continue exactly where it stopped.

A multi-fidelity search trains a configuration for a few epochs, pauses it, and may continue it
later. Continuing must give the same weights as never having stopped, so the state holds
everything a training epoch reads: the model's weights (BatchNorm statistics included), the
optimizer's accumulators (momentum), the learning-rate schedule's position, the random number
generators (Paddle's, numpy's global one and the mixup generator) and the per-epoch history; the
data order needs only the epoch number (the loader seeds every epoch from ``(seed, epoch)``).

Files in the run directory, per finished epoch ``E``: ``train_state-eE.pdparams`` (tensors: the
model under ``model/<name>``, the optimizer under ``opt/<structured name>_<accumulator>``) and
``train_state-eE.json`` (everything else), the JSON written last and atomically, so a state is
complete exactly when its JSON exists; older states are removed after a new one is complete. A
``kill -9`` at any moment leaves the last complete state readable.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np
import paddle

from common.errors import TlbenchError

from .models.pdparams import read_paddle_state

log = logging.getLogger(__name__)

STATE_PREFIX = "train_state-e"
_STATE_RE = re.compile(r"^train_state-e(\d+)\.json$")
STATE_VERSION = 1


class TrainStateError(TlbenchError):
    """A saved training state cannot continue this run (mismatched config, missing or corrupt file)."""


def _paths(run_dir: Path, epoch: int) -> tuple[Path, Path]:
    return run_dir / f"{STATE_PREFIX}{epoch}.pdparams", run_dir / f"{STATE_PREFIX}{epoch}.json"


def latest_state_epoch(run_dir: str | Path) -> Optional[int]:
    """The epoch of the newest complete state in ``run_dir`` (its JSON and tensors exist), or None."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    epochs = []
    for entry in run_dir.iterdir():
        match = _STATE_RE.match(entry.name)
        if match and _paths(run_dir, int(match.group(1)))[0].is_file():
            epochs.append(int(match.group(1)))
    return max(epochs, default=None)


def _param_names(model: paddle.nn.Layer) -> dict[str, str]:
    """Paddle's unique parameter name -> the structured name (stable across model instances)."""
    return {p.name: name for name, p in model.named_parameters()}


def _rename_optimizer_key(key: str, names: dict[str, str]) -> str:
    # Accumulator keys are "<unique param name>_<accumulator>_<n>"; the longest matching name wins.
    best = max((n for n in names if key.startswith(n + "_")), key=len, default=None)
    if best is None:
        raise TrainStateError(f"optimizer state key {key!r} names no parameter of the model")
    return names[best] + key[len(best):]


def _to_json(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    return value


def save_train_state(run_dir: str | Path, *, epoch: int, identity: dict[str, Any], model: paddle.nn.Layer,
                     optimizer: Any, schedule: Any, mixup_rng: np.random.Generator, history: list[dict[str, Any]],
                     scaler: Any = None) -> Path:
    """Write the state after ``epoch`` epochs; returns the JSON path. ``identity`` must match on load."""
    run_dir = Path(run_dir)
    tensors_path, json_path = _paths(run_dir, epoch)
    names = _param_names(model)
    tensors: dict[str, Any] = {f"model/{k}": v for k, v in model.state_dict().items()}
    for key, value in optimizer.state_dict().items():
        if key == "LR_Scheduler":
            continue
        tensors[f"opt/{_rename_optimizer_key(key, names)}"] = value
    tmp = tensors_path.with_suffix(".tmp")
    paddle.save(tensors, str(tmp))
    os.replace(tmp, tensors_path)
    np_state = np.random.get_state()
    payload = {
        "version": STATE_VERSION,
        "epoch": int(epoch),
        "identity": identity,
        "history": history,
        "schedule": _to_json(schedule.state_dict()),
        "mixup_rng": _to_json(mixup_rng.bit_generator.state),
        "numpy_global": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "paddle_rng": [list(_to_json(s.__getstate__())) for s in paddle.get_rng_state()],
        "scaler": _to_json(scaler.state_dict()) if scaler is not None else None,
    }
    tmp = json_path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, json_path)
    for old in run_dir.glob(f"{STATE_PREFIX}*"):
        match = re.match(r"^train_state-e(\d+)\.(json|pdparams)$", old.name)
        if match and int(match.group(1)) < epoch:
            old.unlink(missing_ok=True)
    return json_path


def load_train_state(run_dir: str | Path, epoch: int, *, identity: dict[str, Any], model: paddle.nn.Layer,
                     optimizer: Any, schedule: Any, mixup_rng: np.random.Generator, scaler: Any = None) -> list[dict[str, Any]]:
    """Restore the state saved after ``epoch`` epochs into the given objects; returns the history.

    Raises TrainStateError when the state was saved by a run with another identity (config) or is incomplete.
    """
    run_dir = Path(run_dir)
    tensors_path, json_path = _paths(run_dir, epoch)
    try:
        payload = json.loads(json_path.read_text())
    except (OSError, ValueError) as exc:
        raise TrainStateError(f"cannot read the training state {json_path}: {exc}") from None
    if payload.get("version") != STATE_VERSION or payload.get("epoch") != epoch:
        raise TrainStateError(f"{json_path}: version {payload.get('version')} / epoch {payload.get('epoch')}, "
                              f"expected version {STATE_VERSION} / epoch {epoch}")
    if payload.get("identity") != identity:
        diff = sorted(k for k in set(identity) | set(payload.get("identity") or {})
                      if identity.get(k) != (payload.get("identity") or {}).get(k))
        raise TrainStateError(f"{json_path} was saved by a run with another configuration (differs in {diff}); "
                              "remove the run directory to start over")
    tensors = read_paddle_state(tensors_path)
    model_state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    missing = sorted(set(model.state_dict()) - set(model_state))
    if missing:
        raise TrainStateError(f"{tensors_path} lacks model tensors {missing[:5]}")
    model.set_state_dict({k: paddle.to_tensor(v) for k, v in model_state.items()})
    by_structured = {name: p.name for name, p in model.named_parameters()}
    opt_state: dict[str, Any] = {}
    for key, value in tensors.items():
        if not key.startswith("opt/"):
            continue
        structured = key[len("opt/"):]
        best = max((n for n in by_structured if structured.startswith(n + "_")), key=len, default=None)
        if best is None:
            raise TrainStateError(f"{tensors_path}: optimizer tensor {structured!r} names no parameter of the model")
        opt_state[by_structured[best] + structured[len(best):]] = paddle.to_tensor(value)
    opt_state["LR_Scheduler"] = payload["schedule"]
    optimizer.set_state_dict(opt_state)
    schedule.set_state_dict(payload["schedule"])
    mixup_rng.bit_generator.state = payload["mixup_rng"]
    kind, keys, pos, has_gauss, cached = payload["numpy_global"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    states = []
    for saved, current in zip(payload["paddle_rng"], paddle.get_rng_state()):
        state = type(current).__new__(type(current))
        state.__setstate__(tuple(saved))
        states.append(state)
    paddle.set_rng_state(states)
    if scaler is not None and payload.get("scaler") is not None:
        scaler.load_state_dict(payload["scaler"])
    log.info("continuing %s from the state after epoch %d", run_dir, epoch)
    return list(payload["history"])
