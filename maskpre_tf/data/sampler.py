"""The P×K sampler: batches of P pseudo-identities × K instances, re-driven every epoch."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from maskpre_tf.errors import UserError

# Largest share of a batch's P identities that may be single-image identities.
MAX_SINGLETON_SHARE = 0.25


class PKSampler:
    """Draws batches of P pseudo-identities × K instances, preferring different cameras.

    A batch of ``batch_size`` indices holds P = batch_size // num_instances distinct
    pseudo-identities with K = num_instances consecutive instances each. Identities are drawn
    without replacement until every identity has been used, then reshuffled. The K instances of
    an identity are taken round-robin over its cameras in random order — one image per camera
    before a second image from any camera — which realises the "other cameras first, then the
    same camera" preference of cluster-contrast's RandomMultipleGallerySampler (Dai et al.,
    2021). An identity with fewer than K images contributes all of them plus images drawn again
    with replacement. Label −1 marks clustering outliers, which are never sampled. At most
    :data:`MAX_SINGLETON_SHARE` of a batch's identities are single images (with
    ``--outliers=instances`` thousands of outliers become one-image identities; drawn uniformly
    they would fill the batches with K copies of one image each), unless there are too few
    larger identities to fill the batch.

    The stream is a pure function of (seed, epoch, labels); :meth:`set_labels` re-drives the
    sampler after each clustering step.
    """

    def __init__(
        self,
        labels: np.ndarray,
        camids: np.ndarray,
        batch_size: int,
        num_instances: int,
        seed: int,
    ) -> None:
        """Create the sampler.

        Args:
          labels: int [N] pseudo labels, −1 = outlier (excluded).
          camids: int [N] camera index of each image.
          batch_size: images per batch (B = P × K).
          num_instances: K, images per identity in a batch.
          seed: base seed; the stream of epoch e depends on (seed, e, labels) only.

        Raises:
          UserError: batch geometry is invalid or the labels have fewer than P identities.
        """
        if num_instances < 1 or batch_size < num_instances or batch_size % num_instances:
            raise UserError(
                f"batch size {batch_size} must be a positive multiple of the number of "
                f"instances per identity {num_instances}; set --batch_size to P × "
                "--num_instances"
            )
        self._camids = np.asarray(camids, dtype=np.int64).reshape(-1)
        self._batch_size = int(batch_size)
        self._num_instances = int(num_instances)
        self._seed = int(seed) % (2**63)
        self._labels = np.empty(0, np.int64)
        self._groups: list[tuple[np.ndarray, np.ndarray, int]] = []
        self.set_labels(labels)

    @property
    def batch_size(self) -> int:
        """Images per batch (P × K)."""
        return self._batch_size

    @property
    def num_instances(self) -> int:
        """K: instances per identity in a batch."""
        return self._num_instances

    @property
    def num_pids_per_batch(self) -> int:
        """P: distinct identities per batch."""
        return self._batch_size // self._num_instances

    @property
    def num_identities(self) -> int:
        """Number of distinct non-outlier pseudo-identities in the current labels."""
        return len(self._groups)

    @property
    def labels(self) -> np.ndarray:
        """The current pseudo labels, int64 [N] (a read-only view)."""
        view = self._labels.view()
        view.flags.writeable = False
        return view

    def set_labels(self, labels: np.ndarray) -> None:
        """Replace the pseudo labels (call after every clustering step).

        Args:
          labels: int [N] pseudo labels, −1 = outlier; N must equal len(camids).

        Raises:
          UserError: fewer than P identities, or a length mismatch.
        """
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if labels.shape != self._camids.shape:
            raise UserError(
                f"got {labels.size} pseudo labels for {self._camids.size} images; the label "
                "array must have one entry per training image"
            )
        keep = np.flatnonzero(labels >= 0)
        order = keep[np.argsort(labels[keep], kind="stable")]
        sorted_labels = labels[order]
        boundaries = np.flatnonzero(np.diff(sorted_labels)) + 1
        groups = []
        for members in np.split(order, boundaries) if order.size else []:
            _, cam_codes = np.unique(self._camids[members], return_inverse=True)
            cam_codes = cam_codes.astype(np.int64)
            groups.append((members, cam_codes, int(cam_codes.max()) + 1))
        needed = self.num_pids_per_batch
        if len(groups) < needed:
            raise UserError(
                f"clustering produced {len(groups)} clusters but the batch needs {needed} "
                f"(batch size {self._batch_size} / {self._num_instances} instances); lower "
                "--batch_size or --num_instances / adjust --eps"
            )
        self._labels = labels
        self._groups = groups

    def _instances(self, group: int, rng: np.random.Generator) -> np.ndarray:
        """K image indices of one identity: round-robin over its cameras, then replacement.

        Returns:
          int64 [K] row indices.
        """
        members, cams, num_cams = self._groups[group]
        k = self._num_instances
        n = members.size
        perm = rng.permutation(n)
        cams_p = cams[perm]
        # Rank of each (shuffled) image within its camera, then interleave cameras in a random
        # order: key = rank * num_cams + camera position.
        by_cam = np.argsort(cams_p, kind="stable")
        sorted_cams = cams_p[by_cam]
        rank = np.empty(n, np.int64)
        rank[by_cam] = np.arange(n) - np.searchsorted(sorted_cams, sorted_cams, side="left")
        cam_position = rng.permutation(num_cams)
        ordered = members[perm][np.argsort(rank * num_cams + cam_position[cams_p])]
        if n >= k:
            return ordered[:k]
        return np.concatenate([ordered, rng.choice(members, size=k - n, replace=True)])

    def _slates(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Endless P-sized slates of distinct identities, one per batch (int64 [P] each).

        Identities are drawn without replacement cycle after cycle; at most
        MAX_SINGLETON_SHARE of each slate are single-image identities (unless too few larger
        ones exist). Draws happen batch by batch, so a longer epoch extends a shorter one.
        """
        p = self.num_pids_per_batch
        sizes = np.array([g[0].size for g in self._groups])
        pools = [np.flatnonzero(sizes > 1), np.flatnonzero(sizes == 1)]
        if pools[1].size == 0:
            pools, quotas = pools[:1], (p,)
        else:
            single = min(int(MAX_SINGLETON_SHARE * p), pools[1].size)
            single = max(single, p - pools[0].size)  # too few real clusters: singletons fill in
            quotas = (p - single, single)
        cycles = [_Cycle(pool, rng) for pool in pools]
        while True:
            yield np.concatenate([c.take(q) for c, q in zip(cycles, quotas, strict=True)])

    def epoch_indices(self, epoch: int, num_batches: int) -> np.ndarray:
        """The image indices of one epoch.

        Args:
          epoch: epoch number (part of the random seed).
          num_batches: number of batches to draw.

        Returns:
          int64 [num_batches * batch_size]; each consecutive block of batch_size entries is one
          batch of P identities × K consecutive instances.
        """
        rng = np.random.default_rng([self._seed, int(epoch) % (2**63)])
        out = np.empty((num_batches, self.num_pids_per_batch, self._num_instances), np.int64)
        for b, slate in zip(range(num_batches), self._slates(rng), strict=False):
            for slot, group in enumerate(slate):
                out[b, slot] = self._instances(int(group), rng)
        return out.reshape(-1)


class _Cycle:
    """Members of a pool in random order, reshuffled whenever they run out."""

    def __init__(self, pool: np.ndarray, rng: np.random.Generator):
        self.pool, self.rng = pool, rng
        self.order = rng.permutation(pool)
        self.cursor = 0

    def take(self, count: int) -> np.ndarray:
        """``count`` distinct members (a cycle running out mid-take restarts with the others)."""
        chosen = self.order[self.cursor : self.cursor + count]
        self.cursor += count
        if chosen.size < count:
            fresh = self.rng.permutation(self.pool)
            used = np.isin(fresh, chosen)
            self.order = np.concatenate([fresh[~used], fresh[used]])
            self.cursor = count - chosen.size
            chosen = np.concatenate([chosen, self.order[: self.cursor]])
        return chosen
