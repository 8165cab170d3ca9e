"""Gallery search against a served MaskPre model: embed a gallery once, rank query crops.

The server computes the embeddings (REST or gRPC); ranking is a dot product of L2-normalised
vectors (= cosine similarity) on the client. The gallery embeddings are saved to ``--cache``
and reused while the gallery's file list is unchanged. For large galleries, an approximate or
GPU index (faiss) replaces :func:`rank_gallery`; ``python -m maskpre_tf.search`` does the same
search in-process with a faiss index and draws ranked-list pictures.

Command line::

    python export/gallery_search.py --protocol=rest --server=http://localhost:8501 \\
        --model=maskpre --gallery=gallery/ --query=query.jpg --top_k=10
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import client_common  # noqa: E402  (sibling files of this script)
import rest_client  # noqa: E402


def rank_gallery(
    gallery: np.ndarray, queries: np.ndarray, top_k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k gallery rows per query by cosine similarity.

    Args:
      gallery: float32 [G, D] L2-normalised embeddings.
      queries: float32 [Q, D] L2-normalised embeddings.
      top_k: results per query (capped at G).

    Returns:
      (rows int64 [Q, k], similarities float32 [Q, k]), best first.
    """
    similarity = queries @ gallery.T
    k = min(int(top_k), gallery.shape[0])
    rows = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return rows, np.take_along_axis(similarity, rows, axis=1).astype(np.float32)


def _embedder(protocol: str, server: str, model: str):
    """(embed a folder, embed a list of file contents) for the chosen protocol."""
    if protocol == "grpc":
        import grpc_client

        stub = grpc_client.make_stub(server)
        return (
            lambda folder, bs: grpc_client.embed_folder(stub, model, folder, bs),
            lambda files: grpc_client.predict(stub, model, files),
        )
    return (
        lambda folder, bs: rest_client.embed_folder(server, model, folder, bs),
        lambda files: rest_client.predict(server, model, files),
    )


def load_or_embed_gallery(
    embed_folder, gallery: str, cache: str, batch_size: int
) -> tuple[list[str], np.ndarray]:
    """Gallery paths and embeddings, from ``cache`` when it lists the same files."""
    current = client_common.list_images(gallery)
    if cache and os.path.isfile(cache):
        saved = np.load(cache)
        if [str(p) for p in saved["all_paths"]] == current:
            return [str(p) for p in saved["paths"]], saved["embeddings"]
    paths, embeddings, failed = embed_folder(gallery, batch_size)
    if failed:
        print(
            f"warning: {len(failed)} gallery files could not be embedded, e.g. {failed[0]}",
            file=sys.stderr,
        )
    if cache:
        np.savez(cache, paths=np.array(paths), all_paths=np.array(current), embeddings=embeddings)
    return paths, embeddings


def main(argv: Sequence[str] | None = None) -> int:
    """Rank the query image(s) against the gallery and print the top-k of each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--protocol", choices=("rest", "grpc"), default="rest")
    parser.add_argument(
        "--server",
        default=None,
        help="default http://localhost:8501 (rest) or localhost:8500 (grpc)",
    )
    parser.add_argument("--model", default="maskpre")
    parser.add_argument("--gallery", required=True)
    parser.add_argument("--query", required=True, help="an image or a folder of images")
    parser.add_argument("--top_k", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--cache", default="", help="npz file for the gallery embeddings")
    args = parser.parse_args(argv)
    server = args.server or (
        "localhost:8500" if args.protocol == "grpc" else "http://localhost:8501"
    )
    embed_folder, embed_files = _embedder(args.protocol, server, args.model)
    if not os.path.isdir(args.gallery):
        print(f"error: --gallery={args.gallery} is not a directory", file=sys.stderr)
        return 2
    paths, gallery = load_or_embed_gallery(embed_folder, args.gallery, args.cache, args.batch_size)
    if not paths:
        print(f"error: no gallery image could be embedded from {args.gallery}", file=sys.stderr)
        return 2
    if os.path.isdir(args.query):
        queries, query_emb, _ = embed_folder(args.query, args.batch_size)
    elif os.path.isfile(args.query):
        with open(args.query, "rb") as f:
            queries, query_emb = [args.query], embed_files([f.read()])
    else:
        print(f"error: --query={args.query}: no such file or directory", file=sys.stderr)
        return 2
    rows, scores = rank_gallery(gallery, query_emb, args.top_k)
    for query, q_rows, q_scores in zip(queries, rows, scores, strict=True):
        print(query)
        for rank, (row, score) in enumerate(zip(q_rows, q_scores, strict=True), start=1):
            print(f"  {rank:3d}  {score:.4f}  {paths[row]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
