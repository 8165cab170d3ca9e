"""Package definition for maskpre-tf."""

from setuptools import find_packages, setup

setup(
    name="maskpre-tf",
    version="0.1.0",
    description="Unsupervised person re-identification by simultaneous clustering and mask "
    "prediction (MaskPre) in TensorFlow/Keras",
    packages=find_packages(include=["maskpre_tf", "maskpre_tf.*"]),
    python_requires=">=3.10,<3.14",
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.12,<4",
        "numpy>=1.26,<3",
        "scipy>=1.11,<2",  # sparse matrices for the k-reciprocal Jaccard distance
        "scikit-learn>=1.4,<2",
        "faiss-cpu>=1.8,<2",
        "absl-py>=2.0,<3",
        "tensorboard>=2.21,<2.22",
        "pillow>=10,<14",  # drawing the generated pedestrians and the ranked-list pictures
        # A memory allocator that keeps TensorFlow's freed buffers (maskpre_tf/allocator.py):
        # 1.9-2.4x the training step's speed where glibc's malloc faults them in every step.
        # Wheels exist for Linux x86-64 and aarch64 only; elsewhere the programs run without it.
        "cmeel-mimalloc>=3.4,<4; sys_platform == 'linux' and "
        "(platform_machine == 'x86_64' or platform_machine == 'aarch64')",
    ],
    extras_require={
        "serving": ["tensorflow-serving-api>=2.21,<2.22"],
        # Only to read .pth/.pt files in `python -m maskpre_tf.weights import` (.safetensors
        # needs no torch). A CPU build is enough.
        "convert": ["torch>=2.1,<3"],
        # `python -m maskpre_tf.export --format=onnx` (tf2onnx converts the TF graph; tested with
        # tf2onnx 1.17.0, onnx 1.23.2, onnxruntime 1.32.0) and the onnxruntime tests/benchmark.
        "onnx": ["tf2onnx>=1.17,<1.18", "onnx>=1.18,<2", "onnxruntime>=1.22,<2"],
        # Training curves and the evaluation's CMC picture (maskpre_tf/evaluation/plots.py);
        # without it those pictures are skipped with a note (ranked lists need only pillow).
        "plots": ["matplotlib>=3.7,<4"],
        # pytest-xdist: `make test` runs the suite on two workers (much of a test is single-threaded
        # start-up: importing TensorFlow, building Keras models, tracing).
        "test": ["pytest>=8,<10", "pytest-xdist>=3.5,<4", "ruff>=0.6"],
    },
)
