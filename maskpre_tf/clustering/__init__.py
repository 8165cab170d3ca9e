"""Pseudo labels: faiss k-NN, sparse k-reciprocal Jaccard distance, DBSCAN, statistics."""
