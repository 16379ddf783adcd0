"""Streaming, distribution-aware evaluator producing the URL benchmark's results dict."""

from __future__ import annotations

from typing import Dict, List, Literal, Optional, Union

import numpy as np
import torch
import torch.distributed as dist

from ._checks import ArrayLike, as_embeddings, as_float_1d, as_float_2d, as_labels, check_same_length
from .auroc import _auroc_np, auroc_ood
from .classification import top_k_accuracy
from .cropped import cropped_has_bigger_uncertainty
from .nearest_neighbor import Metric, nearest_neighbor_correct
from .r_auroc import r_auroc_mixed, union_labels
from .retrieval import retrieval_scores
from .rank_correlation import rcorr_crop_unc, rcorr_entropy
from .soft_label_entropy import as_counts
from .summary import uncertainty_summary


# Per-sample scalars are kept in float64: float32 copies would tie values that differ in float64
# and change the rank metrics (the wide inputs are stored in float32 to save memory).
_FLOAT64 = ("uncertainties", "uncertainties_cropped", "crop_fractions")


def labels_are_classes(labels: torch.Tensor | np.ndarray, logits: torch.Tensor | np.ndarray) -> bool:
    """Whether ``labels [N]`` (N >= 1) index the ``C`` classes of ``logits [N, C]``: where they do not
    (e.g. SOP's 11k classes under a 1k-class model) top-k and ``auroc_classification`` are undefined."""
    return 0 <= int(labels.min()) and int(labels.max()) < logits.shape[1]


def _cpu(x: torch.Tensor | np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(x).detach().to(device="cpu", dtype=dtype)


class Evaluator:
    """Accumulates per-batch outputs and computes the per-dataset metrics of the URL benchmark.

    ``update()`` stores detached CPU copies (embeddings, logits, soft labels float32;
    uncertainties and crop fractions float64; labels/indices int64). ``compute()``
    gathers all ranks when ``torch.distributed`` is initialised (uneven shards allowed), orders
    samples by ``indices`` if they were given (duplicated indices, e.g. DistributedSampler
    padding, are kept once; a repeated index with a different label is a ``ValueError``), and
    returns plain floats. Nothing N x N is ever stored.

    Args:
        metric: 1-NN similarity, see :func:`nearest_neighbor_correct`.
        chunk_size: side of one 1-NN search tile, see :func:`nearest_neighbor_correct`.
        backend: ``"torch"`` or ``"faiss"``, see :func:`nearest_neighbor_correct`.
        device: where the 1-NN matrix products run at ``compute()`` (default: CPU), e.g. "cuda".
        exclude_singleton_queries: leave out of ``r1``/``auroc_correct`` (and of
            ``auroc_correct_mixed`` in :meth:`compute_mixed`), as queries, the samples whose
            class has no other member (see :func:`retrieval_metrics`); off by default, as in the
            original. Their number is reported either way, as the attribute
            ``n_singleton_queries`` (set by ``compute()``; not a results key, so that tables
            of metrics do not average a count).
    """

    def __init__(
        self,
        *,
        metric: Metric = "cosine",
        chunk_size: Optional[int] = None,
        backend: Literal["torch", "faiss"] = "torch",
        device: Union[str, torch.device, None] = None,
        exclude_singleton_queries: bool = False,
    ) -> None:
        self.metric = metric
        self.chunk_size = chunk_size
        self.backend = backend
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.exclude_singleton_queries = exclude_singleton_queries
        self.reset()

    def reset(self) -> None:
        """Forget all stored batches."""
        self._store: Dict[str, List[torch.Tensor]] = {}
        self._num_batches = 0
        self.n_singleton_queries: Optional[int] = None

    def update(
        self,
        embeddings: ArrayLike,
        uncertainties: ArrayLike,
        labels: ArrayLike,
        *,
        soft_labels: Optional[ArrayLike] = None,
        uncertainties_cropped: Optional[ArrayLike] = None,
        crop_fractions: Optional[ArrayLike] = None,
        logits: Optional[ArrayLike] = None,
        indices: Optional[ArrayLike] = None,
    ) -> None:
        """Add one batch of B samples.

        Args:
            embeddings: ``[B, D]``; uncertainties: ``[B]`` (higher = more uncertain);
                labels: ``[B]`` integer class ids.
            soft_labels: ``[B, C]`` annotator counts/probabilities -> ``rcorr_entropy``.
            uncertainties_cropped: ``[B]`` uncertainties of center crops -> ``croppedHasBiggerUnc``.
            crop_fractions: ``[B]`` kept side fraction of those crops -> ``rcorr_crop_unc``
                (needs ``uncertainties_cropped``).
            logits: ``[B, C]`` classifier outputs -> ``top1``, ``top5``, ``auroc_classification``.
            indices: ``[B]`` global sample ids; makes results independent of batching/sharding
                (not positions within the batch: a repeated id is kept once).

        Every optional argument must be given in every batch or in none.
        """
        batch = {
            "embeddings": _cpu(as_embeddings(embeddings, "embeddings"), torch.float32),
            "uncertainties": _cpu(as_float_1d(uncertainties, "uncertainties"), torch.float64),
            "labels": _cpu(as_labels(labels, "labels"), torch.int64),
        }
        optional = {
            "soft_labels": None if soft_labels is None else as_counts(soft_labels, "soft_labels"),
            "uncertainties_cropped": None
            if uncertainties_cropped is None
            else as_float_1d(uncertainties_cropped, "uncertainties_cropped"),
            "crop_fractions": None if crop_fractions is None else as_float_1d(crop_fractions, "crop_fractions"),
            "logits": None if logits is None else as_float_2d(logits, "logits"),
            "indices": None if indices is None else as_labels(indices, "indices"),
        }
        if crop_fractions is not None and uncertainties_cropped is None:
            raise ValueError("crop_fractions needs uncertainties_cropped in the same update() call")
        for name, value in optional.items():
            if value is not None:
                dtype = torch.int64 if name == "indices" else torch.float64 if name in _FLOAT64 else torch.float32
                batch[name] = _cpu(value, dtype)
        check_same_length(**batch)
        if self._num_batches and set(batch) != set(self._store):
            raise ValueError(
                f"update() got inputs {sorted(batch)} but earlier batches had {sorted(self._store)}; "
                "give each optional input in every batch or in none"
            )
        for name in ("embeddings", "soft_labels", "logits"):
            if name in batch and self._num_batches and batch[name].shape[1] != self._store[name][0].shape[1]:
                raise ValueError(
                    f"{name} has width {batch[name].shape[1]} in this update() but "
                    f"{self._store[name][0].shape[1]} in earlier batches; it must be the same in every batch"
                )
        for name, value in batch.items():
            self._store.setdefault(name, []).append(value)
        self._num_batches += 1

    def _gathered(self) -> Dict[str, torch.Tensor]:
        """Local batches, concatenated, gathered from all ranks, ordered by ``indices`` if given."""
        for name, parts in self._store.items():
            if len(parts) > 1:  # concatenate once and keep only that: no second copy held
                parts[:] = [torch.cat(parts)]
        local = {name: parts[0] for name, parts in self._store.items()}
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            shards: List[Dict[str, torch.Tensor]] = [{} for _ in range(dist.get_world_size())]
            dist.all_gather_object(shards, local)
            keys = {frozenset(s) for s in shards if s}
            if len(keys) > 1:
                raise ValueError("ranks called update() with different sets of inputs")
            shards = [s for s in shards if s]
            data = {name: torch.cat([s[name] for s in shards]) for name in (shards[0] if shards else {})}
        else:
            data = local
        if not data:
            raise ValueError("Evaluator.compute() called before any update()")
        if "indices" in data:
            ids = data["indices"].numpy()
            _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)  # sorted ids, first copy
            labels = data["labels"].numpy()
            kept = labels[first][inverse.reshape(-1)]  # the label of each sample's first copy
            clash = np.flatnonzero(labels != kept)
            if clash.size:
                i = clash[0]
                raise ValueError(
                    f"indices: sample id {ids[i]} appears more than once with different labels ({kept[i]} and "
                    f"{labels[i]}); indices must be global sample ids (e.g. the dataset index), not positions "
                    "within a batch or shard"
                )
            order = torch.from_numpy(first)
            data = {name: value[order] for name, value in data.items()}
        return data

    def compute(self, *, correct: Optional[ArrayLike] = None) -> Dict[str, float]:
        """All metrics whose inputs were given (keys of absent inputs are absent, not 0).

        ``correct``: the per-sample 1-NN correctness ``[N]`` (bool, in ``indices`` order) of
        an earlier :func:`nearest_neighbor_correct` on the same gathered embeddings and labels,
        e.g. shared by several evaluators that differ only in the uncertainties; skips the search.

        Keys: ``r1``, ``auroc_correct`` and the :func:`uncertainty_summary` keys always;
        ``top1``, ``top5``, ``auroc_classification`` with logits whose classes cover the labels; ``croppedHasBiggerUnc`` with
        uncertainties_cropped; ``rcorr_crop_unc`` with crop_fractions; ``rcorr_entropy`` with
        soft_labels. Fractions are in [0, 1] (the original's top1/top5 were percent) and values
        are not rounded (the original rounded to 4 decimals).
        """
        d = self._gathered()
        emb, unc, labels = d["embeddings"], d["uncertainties"], d["labels"]
        correct = self._correct(emb, labels, correct)
        unc_np = unc.double().numpy()
        out = retrieval_scores(unc_np, correct, labels.numpy(), self.exclude_singleton_queries)
        self.n_singleton_queries = int(out.pop("n_singleton_queries"))
        if "logits" in d and labels_are_classes(labels, d["logits"]):  # else those keys are absent
            logits = d["logits"]
            out["top1"] = top_k_accuracy(logits, labels, 1)
            out["top5"] = top_k_accuracy(logits, labels, 5)
            out["auroc_classification"] = _auroc_np(unc_np, (logits.argmax(dim=1) != labels).numpy())
        if "uncertainties_cropped" in d:
            out["croppedHasBiggerUnc"] = cropped_has_bigger_uncertainty(unc, d["uncertainties_cropped"])
        if "crop_fractions" in d:
            out["rcorr_crop_unc"] = rcorr_crop_unc(d["uncertainties_cropped"], d["crop_fractions"])
        if "soft_labels" in d:
            out["rcorr_entropy"] = rcorr_entropy(unc, d["soft_labels"])
        out.update(uncertainty_summary(unc))
        return out

    def _correct(self, emb: torch.Tensor, labels: torch.Tensor, correct: Optional[ArrayLike]) -> torch.Tensor:
        """The 1-NN correctness ``[N]``: ``correct`` if given (checked), else one search."""
        if correct is None:
            return nearest_neighbor_correct(
                emb.to(self.device), labels, metric=self.metric, chunk_size=self.chunk_size, backend=self.backend
            )
        given = torch.as_tensor(correct).cpu()
        if given.dtype != torch.bool or given.shape != labels.shape:
            raise ValueError(f"correct must be a bool [N] with N = {len(labels)} gathered samples, "
                             f"got {given.dtype} {tuple(given.shape)}")
        return given

    def compute_mixed(self, ood: "Evaluator", *, correct: Optional[ArrayLike] = None) -> Dict[str, float]:
        """``auroc_ood`` and ``auroc_correct_mixed`` with this evaluator as ID and ``ood`` as OOD.

        Uses all stored samples of both (after gathering); see :func:`r_auroc_mixed` for the
        label shift that makes the two class sets disjoint. This evaluator's
        ``exclude_singleton_queries`` applies to the union's labels (``ood``'s is not read).
        ``correct``: the 1-NN correctness ``[N_id + N_ood]`` of that union (ID first), from an
        earlier search; skips the search.
        """
        ind, ood_d = self._gathered(), ood._gathered()
        out = {"auroc_ood": auroc_ood(ind["uncertainties"], ood_d["uncertainties"])}
        if correct is None:
            out["auroc_correct_mixed"] = r_auroc_mixed(
                ind["uncertainties"], ind["embeddings"].to(self.device), ind["labels"],
                ood_d["uncertainties"], ood_d["embeddings"].to(self.device), ood_d["labels"],
                metric=self.metric, chunk_size=self.chunk_size, backend=self.backend,
                exclude_singleton_queries=self.exclude_singleton_queries,
            )
            return out
        labels = union_labels(ind["labels"].numpy(), ood_d["labels"].numpy())
        right = self._correct(ind["embeddings"], torch.from_numpy(labels), correct)
        unc = torch.cat([ind["uncertainties"], ood_d["uncertainties"]]).double().numpy()
        out["auroc_correct_mixed"] = retrieval_scores(unc, right, labels, self.exclude_singleton_queries)["auroc_correct"]
        return out
