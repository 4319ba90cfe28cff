"""Load an nnU-Net v2 results folder without running code that came with it.

nnunetv2 loads ``fold_N/checkpoint_*.pth`` with ``torch.load(..., weights_only=False)`` (nnU-Net PR
2683): a checkpoint is a pickle, and a pickle can call any function, so a hostile checkpoint runs
whatever it likes as whoever loads it (the launcher and every worker). Here each checkpoint is
loaded with ``weights_only=True``, torch's restricted unpickler, which builds tensors, containers
and numbers and only the globals allowed by name: the numpy scalar, dtype and ``_codecs.encode``
that nnU-Net's training log and best-EMA value pickle as (:data:`SAFE_GLOBALS`, the allowlist
nnU-Net's users proposed; enough for checkpoints nnunetv2 2.8 writes). ``plans.json`` names the
network class and its layers, which nnunetv2 imports and calls by dotted path (``pydoc.locate``):
they must be nnU-Net's own architectures and ``torch.nn`` layers. Then the folder is initialised
as nnunetv2's ``initialize_from_trained_model_folder`` does, step for step, with nnunetv2's own
functions.

A checkpoint that needs any other global, or plans naming other code, is refused, naming what it
needs, unless the user trusts the model's code (``trust_code``, ``lnq run --trust-model-code``):
then nnunetv2 loads the folder its own way.
"""

from __future__ import annotations

import _codecs
import inspect
import os
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pipeline.errors import ModelError

TRUST_OPTION = "--trust-model-code"
NETWORK_PREFIXES = ("dynamic_network_architectures.architectures.",)
"""Where ``plans.json``'s network class may come from: nnU-Net's own architectures package."""
LAYER_PREFIXES = ("torch.nn.",)
"""Where the layers ``plans.json`` names for import (convolution, norm, dropout, nonlinearity) may be."""


def _numpy_globals() -> list[Any]:
    core = getattr(np, "_core", None) or np.core  # numpy 2 moved numpy.core to numpy._core
    dtypes = getattr(np, "dtypes", None)
    found = [core.multiarray.scalar, np.dtype]
    if dtypes is not None:
        found += [getattr(dtypes, name) for name in ("Float64DType", "Float32DType") if hasattr(dtypes, name)]
    return found


SAFE_GLOBALS: list[Any] = [*_numpy_globals(), _codecs.encode]
"""The globals an nnU-Net checkpoint's pickle may name beyond tensors: numpy scalars (the training
log's values, the best EMA Dice) as numpy pickles them."""


def load_checkpoint(path: str, *, trust_code: bool = False) -> dict[str, Any]:
    """The checkpoint at ``path``, loaded on the CPU without running code it carries (unless
    ``trust_code``); a :class:`ModelError` naming what it needs when that is not enough."""
    if trust_code:
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    else:
        try:
            with torch.serialization.safe_globals(SAFE_GLOBALS):
                loaded = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ModelError(
                f"nnU-Net checkpoint {path} needs {_unsafe_globals(path)}, beyond the tensors, numbers "
                f"and numpy scalars a checkpoint holds: loading it could run code it carries. Load it "
                f"only if you trust where it came from ({TRUST_OPTION})"
            ) from exc
        except Exception as exc:  # not a zip, truncated, not a torch file
            raise ModelError(
                f"nnU-Net checkpoint {path} cannot be read: {type(exc).__name__}: {exc}"
            ) from exc
    return _checked(loaded, path)


def _unsafe_globals(path: str) -> str:
    """What the checkpoint names that the allowlist lacks (read without running it)."""
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS}
    try:
        found = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path) if g not in allowed]
    except Exception as exc:
        return f"globals that cannot be listed ({type(exc).__name__})"
    return ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "") or "other globals"


def _checked(checkpoint: object, path: str) -> dict[str, Any]:
    """The entries inference reads, checked for their types (a checkpoint is untrusted input)."""
    if not isinstance(checkpoint, dict):
        raise ModelError(f"nnU-Net checkpoint {path} holds a {type(checkpoint).__name__}, not a dict")
    weights = checkpoint.get("network_weights")
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ModelError(f"nnU-Net checkpoint {path} has no network_weights of tensors")
    if not isinstance(checkpoint.get("trainer_name"), str):
        raise ModelError(f"nnU-Net checkpoint {path} has no trainer_name")
    init_args = checkpoint.get("init_args")
    if not isinstance(init_args, dict) or not isinstance(init_args.get("configuration"), str):
        raise ModelError(f"nnU-Net checkpoint {path} has no init_args configuration")
    axes = checkpoint.get("inference_allowed_mirroring_axes")
    if axes is not None and not (
        isinstance(axes, (tuple, list)) and all(isinstance(a, int) and 0 <= a < 3 for a in axes)
    ):
        raise ModelError(f"nnU-Net checkpoint {path}: inference_allowed_mirroring_axes {axes!r} are not axes")
    return checkpoint


def check_plans_code(configuration_manager: Any, folder: str) -> None:
    """The network class and the layers ``plans.json`` names for nnunetv2 to import are nnU-Net's
    architectures and ``torch.nn`` layers (anything else would be imported and called)."""
    name = configuration_manager.network_arch_class_name
    if not isinstance(name, str) or not name.startswith(NETWORK_PREFIXES):
        raise ModelError(
            f"nnU-Net folder {folder}: plans.json network class {name!r} is not one of nnU-Net's "
            f"architectures ({NETWORK_PREFIXES[0]}...); importing it could run code ({TRUST_OPTION} "
            "if you trust it)"
        )
    kwargs = configuration_manager.network_arch_init_kwargs
    for key in configuration_manager.network_arch_init_kwargs_req_import:
        value = kwargs.get(key) if isinstance(kwargs, dict) else None
        if value is not None and not (isinstance(value, str) and value.startswith(LAYER_PREFIXES)):
            raise ModelError(
                f"nnU-Net folder {folder}: plans.json {key} {value!r} is not a torch.nn layer; "
                f"importing it could run code ({TRUST_OPTION} if you trust it)"
            )


def initialize_predictor(
    predictor: Any, folder: str, folds: Sequence[int | str], checkpoint_name: str, *, trust_code: bool
) -> None:
    """nnunetv2's ``initialize_from_trained_model_folder`` with each step its own, except the
    loading of checkpoints (:func:`load_checkpoint`) and the check of the plans' code."""
    if trust_code:
        predictor.initialize_from_trained_model_folder(
            folder, use_folds=tuple(folds), checkpoint_name=checkpoint_name
        )
        return
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dataset_json = load_json(os.path.join(folder, "dataset.json"))
    plans_manager = PlansManager(load_json(os.path.join(folder, "plans.json")))
    parameters = []
    for i, fold in enumerate(folds):
        fold = int(fold) if fold != "all" else fold
        checkpoint = load_checkpoint(os.path.join(folder, f"fold_{fold}", checkpoint_name))
        if i == 0:
            trainer_name = checkpoint["trainer_name"]
            configuration_name = checkpoint["init_args"]["configuration"]
            mirroring = checkpoint.get("inference_allowed_mirroring_axes")
        parameters.append(checkpoint["network_weights"])
    configuration_manager = plans_manager.get_configuration(configuration_name)
    check_plans_code(configuration_manager, folder)
    num_input_channels = determine_num_input_channels(plans_manager, configuration_manager, dataset_json)
    trainer_class = recursive_find_trainer_class_by_name(trainer_name)
    if trainer_class is None:
        raise ModelError(f"nnU-Net folder {folder}: trainer {trainer_name!r} is not one nnunetv2 has")
    num_output_channels = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    if "plans_manager" in inspect.signature(trainer_class.build_network_architecture).parameters:
        network = trainer_class.build_network_architecture(
            plans_manager,
            configuration_manager,
            num_input_channels,
            num_output_channels,
            enable_deep_supervision=False,
        )
    else:  # the older signature, as nnunetv2 still accepts it
        network = trainer_class.build_network_architecture(
            configuration_manager.network_arch_class_name,
            configuration_manager.network_arch_init_kwargs,
            configuration_manager.network_arch_init_kwargs_req_import,
            num_input_channels,
            num_output_channels,
            enable_deep_supervision=False,
        )
    network.load_state_dict(parameters[0])
    predictor.manual_initialization(
        network,
        plans_manager,
        configuration_manager,
        parameters,
        dataset_json,
        trainer_name,
        None if mirroring is None else tuple(mirroring),
    )
