"""k-nearest-neighbour search over L2-normalised features with faiss, in bounded memory.

The pseudo-label engine needs, for every training feature, its ``k`` most similar features by
cosine similarity (inner product of L2-normalised vectors; the squared Euclidean distance
``2 - 2 cos`` ranks neighbours identically). Three search back-ends are offered:

* ``"flat"``: exact brute-force search that exploits the symmetry of an all-pairs search
  (the queries are the database): similarities are computed one ``B x B`` tile at a time for
  the upper block triangle only (BLAS matrix products), and each tile updates the top-k lists of
  both its rows and its columns. Rows start from their own diagonal tile, so later tiles only
  contribute the few entries above a row's current k-th best similarity. Half the arithmetic of
  a plain search, ``O(N k + B^2)`` memory. Pays off when the product dominates (large ``D``).
* ``"faiss_flat"``: exact search with ``faiss.knn`` (inner-product metric) over blocks of queries,
  the way a faiss flat index is usually queried; faster than ``"flat"`` for small ``D``, where
  the top-k bookkeeping rather than the product dominates.
* ``"ivf"``: an approximate inverted-file index (``faiss.IndexIVFFlat``, inner product) for very
  large ``N``: a coarse k-means quantiser with ``nlist`` cells, each query scanning the
  ``nprobe`` nearest cells. Recall against exact search can be measured with
  :func:`knn_recall`.

``"auto"`` picks exact search up to :data:`AUTO_EXACT_MAX_N` samples (``"flat"`` from
:data:`AUTO_SYMMETRIC_MIN_DIM` dimensions, ``"faiss_flat"`` below) and the IVF index above.
"""

from __future__ import annotations

import math

import faiss
import numpy as np

from maskpre_tf.errors import UserError

#: Largest ``N`` for which ``index="auto"`` still uses exact search.
AUTO_EXACT_MAX_N = 200_000

#: Smallest feature width for which ``index="auto"`` uses the symmetric tiled search.
AUTO_SYMMETRIC_MIN_DIM = 512

#: Query block size (rows) for exact search; bounds the temporary memory of one search call.
DEFAULT_QUERY_BATCH = 4096

#: Tile edge of the symmetric exact search (one ``B x B`` float32 tile and masks at a time).
DEFAULT_TILE = 2048

_INDEX_KINDS = ("auto", "flat", "faiss_flat", "ivf")


def l2_normalize(features: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Return the rows of ``features`` scaled to unit L2 norm.

    Args:
      features: ``[N, D]`` array of any real dtype.
      eps: rows with a norm below this are left as (near-)zero vectors instead of dividing by 0.

    Returns:
      ``[N, D]`` C-contiguous float32 array; a fresh copy, the input is never modified.
    """
    out = np.array(features, dtype=np.float32, order="C", copy=True)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    out /= np.maximum(norms, eps)
    return out


def as_unit_rows(features: np.ndarray, tol: float = 1e-5) -> np.ndarray:
    """Return L2-normalised float32 rows, without copying input that already is.

    Args:
      features: ``[N, D]`` array.
      tol: rows whose norm is within ``tol`` of 1 count as normalised.

    Returns:
      ``features`` itself when it is C-contiguous float32 with unit rows (treat it as read-only),
      otherwise a normalised copy (:func:`l2_normalize`).
    """
    arr = np.asarray(features)
    if arr.dtype == np.float32 and arr.ndim == 2 and arr.flags.c_contiguous:
        sq = np.einsum("ij,ij->i", arr, arr)
        if sq.size == 0 or float(np.abs(np.sqrt(sq) - 1.0).max()) <= tol:
            return arr
    return l2_normalize(arr)


def check_features(features: np.ndarray, name: str = "features") -> np.ndarray:
    """Validate a feature matrix and return it as float32 (no copy when already float32).

    Args:
      features: expected ``[N, D]`` with ``D >= 1`` and only finite values.
      name: what to call the array in error messages.

    Returns:
      The ``[N, D]`` float32 array.

    Raises:
      UserError: wrong rank, zero width, or NaN/inf values.
    """
    arr = np.asarray(features)
    if arr.ndim != 2:
        raise UserError(
            f"{name}: expected a 2-D array [num_samples, feature_dim], got shape {arr.shape}; "
            "stack one feature vector per row"
        )
    if arr.shape[1] < 1:
        raise UserError(f"{name}: feature_dim is 0 (shape {arr.shape}); pass non-empty vectors")
    if not np.issubdtype(arr.dtype, np.number):
        raise UserError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if arr.size and not np.isfinite(arr).all():
        bad = int(np.count_nonzero(~np.isfinite(arr).all(axis=1)))
        raise UserError(
            f"{name}: {bad} row(s) contain NaN or inf; check the feature extractor "
            "(e.g. a diverged model or a corrupt image) and drop or fix those rows"
        )
    return arr


def set_num_threads(num_threads: int | None) -> None:
    """Set the number of OpenMP threads faiss uses (``None`` leaves the current setting)."""
    if num_threads is not None:
        if num_threads < 1:
            raise UserError(f"num_threads must be >= 1, got {num_threads}")
        faiss.omp_set_num_threads(int(num_threads))


def default_nlist(num_samples: int) -> int:
    """Number of IVF cells for ``num_samples`` database vectors: ``4 * sqrt(N)``, at least 1.

    The ``4 sqrt(N)`` rule of thumb is the one in the faiss wiki ("Guidelines to choose an
    index"); it is capped so that every cell receives at least ~39 training points.
    """
    return int(max(1, min(round(4 * math.sqrt(num_samples)), num_samples // 39)))


def _merge_candidates(
    top_sim: np.ndarray,
    top_ids: np.ndarray,
    thresh: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    sims: np.ndarray,
) -> None:
    """Merge candidate pairs into the running top-k lists (in place).

    Args:
      top_sim, top_ids: ``[N, k]`` running best similarities (decreasing) and ids.
      thresh: ``[N]`` the k-th best similarity of every row (``top_sim[:, -1]``).
      rows, cols, sims: candidate ``(row, id, similarity)`` triples, any order.
    """
    if len(rows) == 0:
        return
    k = top_sim.shape[1]
    touched = np.unique(rows)
    all_rows = np.concatenate((np.repeat(touched, k), rows))
    all_ids = np.concatenate((top_ids[touched].ravel(), cols))
    all_sims = np.concatenate((top_sim[touched].ravel(), sims))
    order = np.lexsort((-all_sims, all_rows))  # by row, then decreasing similarity, stable
    counts = np.bincount(np.searchsorted(touched, all_rows), minlength=len(touched))
    rank = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = order[rank < k]
    top_sim[touched] = all_sims[keep].reshape(len(touched), k)
    top_ids[touched] = all_ids[keep].reshape(len(touched), k)
    thresh[touched] = top_sim[touched, k - 1]


def _exact_search_symmetric(x: np.ndarray, k: int, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """All-pairs exact top-``k`` by inner product over the upper block triangle of tiles.

    Each row's list starts from its own diagonal tile; every off-diagonal tile is then scanned
    for entries above the rows' (resp. columns') current k-th best similarity, which after the
    first tiles admits only a few candidates, merged with :func:`_merge_candidates`.
    """
    n = x.shape[0]
    top_sim = np.full((n, k), -np.inf, dtype=np.float32)
    top_ids = np.full((n, k), -1, dtype=np.int64)
    for a in range(0, n, tile):
        xa = x[a : a + tile]
        sims = xa @ xa.T
        kk = min(k, sims.shape[1])
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        vals = np.take_along_axis(sims, part, 1)
        order = np.argsort(-vals, axis=1, kind="stable")
        top_sim[a : a + tile, :kk] = np.take_along_axis(vals, order, 1)
        top_ids[a : a + tile, :kk] = np.take_along_axis(part, order, 1) + a
    thresh = top_sim[:, k - 1].copy()
    for a in range(0, n, tile):
        xa = x[a : a + tile]
        for b in range(a + tile, n, tile):
            sims = xa @ x[b : b + tile].T
            th_a, th_b = thresh[a : a + tile], thresh[b : b + tile]
            sel_a = np.flatnonzero(sims.max(axis=1) > th_a)
            r1, c1 = np.nonzero(sims[sel_a] > th_a[sel_a, None])
            r1 = sel_a[r1]
            sel_b = np.flatnonzero(sims.max(axis=0) > th_b)
            r2, c2 = np.nonzero(sims[:, sel_b] > th_b[None, sel_b])
            c2 = sel_b[c2]
            _merge_candidates(
                top_sim,
                top_ids,
                thresh,
                np.concatenate((r1 + a, c2 + b)),
                np.concatenate((c1 + b, r2 + a)),
                np.concatenate((sims[r1, c1], sims[r2, c2])),
            )
    return top_sim, top_ids


def _exact_search(x: np.ndarray, k: int, query_batch: int) -> tuple[np.ndarray, np.ndarray]:
    n = x.shape[0]
    sims = np.empty((n, k), dtype=np.float32)
    ids = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, query_batch):
        stop = min(start + query_batch, n)
        d, i = faiss.knn(x[start:stop], x, k, metric=faiss.METRIC_INNER_PRODUCT)
        sims[start:stop] = d
        ids[start:stop] = i
    return sims, ids


def build_ivf_index(
    x: np.ndarray,
    nlist: int | None = None,
    nprobe: int = 16,
    train_size: int | None = None,
    seed: int = 0,
) -> faiss.IndexIVFFlat:
    """Train and fill an inner-product IVF index over ``x``.

    Args:
      x: ``[N, D]`` float32 L2-normalised database vectors.
      nlist: number of coarse cells (default :func:`default_nlist`).
      nprobe: cells scanned per query; more is slower and closer to exact.
      train_size: points used to train the quantiser (default ``min(N, 64 * nlist)``),
        sampled without replacement with ``seed``.
      seed: seed of the training sample and of faiss' k-means.

    Returns:
      A trained ``faiss.IndexIVFFlat`` holding all of ``x`` (ids ``0..N-1``).
    """
    n, d = x.shape
    nlist = default_nlist(n) if nlist is None else int(nlist)
    if nlist < 1:
        raise UserError(f"nlist must be >= 1, got {nlist}")
    train_size = min(n, 64 * nlist) if train_size is None else min(n, int(train_size))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = int(seed)
    index.cp.niter = 10
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=train_size, replace=False))
    index.train(np.ascontiguousarray(x[sample]))
    index.add(x)
    index.nprobe = int(min(nprobe, nlist))
    return index


def knn_search(
    features: np.ndarray,
    k: int,
    index: str = "auto",
    normalize: bool = True,
    query_batch: int = DEFAULT_QUERY_BATCH,
    nlist: int | None = None,
    nprobe: int = 16,
    num_threads: int | None = None,
    seed: int = 0,
    tile: int = DEFAULT_TILE,
) -> tuple[np.ndarray, np.ndarray]:
    """Find each sample's ``k`` most similar samples (itself included) by cosine similarity.

    Args:
      features: ``[N, D]`` real array, one feature per row.
      k: neighbours per row, clamped to ``N``.
      index: ``"flat"`` (exact, symmetric tiles), ``"faiss_flat"`` (exact, ``faiss.knn``),
        ``"ivf"`` (approximate, see :func:`build_ivf_index`) or ``"auto"`` (exact up to
        :data:`AUTO_EXACT_MAX_N` rows, ``"flat"`` when ``D >=`` :data:`AUTO_SYMMETRIC_MIN_DIM`
        else ``"faiss_flat"``; ``"ivf"`` above).
      normalize: L2-normalise the rows first (set False only if they already are).
      query_batch: rows searched per call by ``"faiss_flat"`` and ``"ivf"``, bounding temporary
        memory to about ``query_batch * (N + k) * 4`` bytes.
      nlist, nprobe: IVF parameters (ignored for exact search).
      num_threads: faiss OpenMP threads (``None``: leave faiss' setting); ``"flat"`` runs on
        numpy's BLAS thread pool instead.
      seed: seed of the IVF training (ignored for exact search).
      tile: tile edge of ``"flat"`` (memory about ``tile^2 * 5`` bytes per tile).

    Returns:
      ``(similarities, indices)``: ``[N, k']`` float32 cosine similarities in decreasing order and
      ``[N, k']`` int64 neighbour ids, ``k' = min(k, N)``. Approximate search may return fewer
      than ``k'`` hits for a row; the missing slots hold id ``-1`` and similarity ``-inf``.
    """
    if k < 1:
        raise UserError(f"k must be >= 1, got {k}")
    if index not in _INDEX_KINDS:
        raise UserError(f"index must be one of {_INDEX_KINDS}, got {index!r}")
    x = check_features(features)
    x = as_unit_rows(x) if normalize else np.ascontiguousarray(x)
    n = x.shape[0]
    k = min(int(k), n)
    if n == 0:
        return np.empty((0, 0), np.float32), np.empty((0, 0), np.int64)
    set_num_threads(num_threads)
    kind = index
    if kind == "auto":
        if n > AUTO_EXACT_MAX_N:
            kind = "ivf"
        else:
            kind = "flat" if x.shape[1] >= AUTO_SYMMETRIC_MIN_DIM else "faiss_flat"
    if kind == "flat":
        return _exact_search_symmetric(x, k, max(1, int(tile)))
    if kind == "faiss_flat":
        return _exact_search(x, k, max(1, int(query_batch)))
    ivf = build_ivf_index(x, nlist=nlist, nprobe=nprobe, seed=seed)
    sims = np.empty((n, k), dtype=np.float32)
    ids = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, max(1, int(query_batch)) * 4):
        stop = min(start + max(1, int(query_batch)) * 4, n)
        d, i = ivf.search(x[start:stop], k)
        sims[start:stop] = d
        ids[start:stop] = i
    del ivf
    sims[ids < 0] = -np.inf
    return sims, ids


def knn_recall(
    features: np.ndarray,
    indices: np.ndarray,
    num_queries: int = 1000,
    seed: int = 0,
    normalize: bool = True,
) -> float:
    """Recall of approximate neighbour lists against exact search on a random query sample.

    Args:
      features: ``[N, D]`` the features the lists were computed from.
      indices: ``[N, k]`` int64 neighbour ids from an approximate search (``-1`` = missing).
      num_queries: sample size (clamped to ``N``), drawn with ``seed``.
      normalize: L2-normalise ``features`` first (as :func:`knn_search` did).

    Returns:
      Fraction in ``[0, 1]`` of the exact top-``k`` ids found in the approximate lists,
      averaged over the sampled queries.
    """
    x = check_features(features)
    n, k = indices.shape
    if n == 0 or k == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    q = np.sort(rng.choice(n, size=min(num_queries, n), replace=False))
    xq = as_unit_rows(x[q]) if normalize else np.ascontiguousarray(x[q])
    xb = as_unit_rows(x) if normalize else np.ascontiguousarray(x)
    _, exact = faiss.knn(xq, xb, k, metric=faiss.METRIC_INNER_PRODUCT)
    hits = 0
    for row, exact_row in zip(indices[q], exact, strict=True):
        hits += len(np.intersect1d(row[row >= 0], exact_row))
    return hits / float(exact.size)
