# The image of hpo's KFP components and of `hpo` in a pod. There is no published image: build and
# push your own, then compile pipelines for it (docs/kfp.md, "The image"):
#   docker build -t REGISTRY/hpo:0.1.0 . && docker push REGISTRY/hpo:0.1.0
#   hpo pipelines compile --image REGISTRY/hpo:0.1.0 out/
# Reproducible: a pinned base image and every Python package pinned by image-constraints.txt
# (committed beside this file). CUDA-capable: torch from PyPI (Linux x86_64) ships the CUDA 13
# runtime libraries (nvidia-* wheels); the node needs an NVIDIA driver >= 580 and the NVIDIA device
# plugin, nothing else in the image. Everything is installed at build time; nothing is downloaded
# when a pipeline step runs (YOLO_OFFLINE=1, models are built from Ultralytics' bundled YAMLs or
# read from the volume). No credentials here: MLflow/S3/storage settings come from a Kubernetes
# Secret at run time. Runs as the non-root user hpo (uid 1000, gid 0).
FROM python:3.11.7-slim-bookworm

# OpenCV (an Ultralytics dependency) needs these shared libraries.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    YOLO_OFFLINE=1 \
    YOLO_CONFIG_DIR=/tmp/Ultralytics \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/home/hpo

WORKDIR /opt/hpo
COPY pyproject.toml README.md image-constraints.txt ./
COPY hpo ./hpo
COPY plugins ./plugins
COPY pipelines ./pipelines
COPY benchmarks ./benchmarks
COPY manifests ./manifests
# every extra but the tests; the KFP components import hpo_kfp (extra kfp) in the pod
RUN pip install --constraint image-constraints.txt ".[all]" \
    && python -c "import hpo, hpo_kfp.step, kfp, torch, ultralytics; assert torch.version.cuda, 'a CPU-only torch'; print('hpo', hpo.__version__, 'torch', torch.__version__, 'CUDA', torch.version.cuda)" \
    && hpo --help > /dev/null

# A non-root user; group 0 owns what it writes, so a volume that is group-writable for gid 0 (or
# owned by uid 1000) is writable: see docs/kfp.md for preparing the PVC.
RUN useradd --uid 1000 --gid 0 --create-home --home-dir /home/hpo hpo \
    && mkdir -p /mnt/hpo && chown 1000:0 /mnt/hpo && chmod 0775 /mnt/hpo
USER 1000:0

# KFP sets the command of its lightweight components (python3 -m kfp.dsl.executor_main ...);
# run by hand, the image is the hpo CLI: docker run IMAGE preflight --mount /mnt/hpo --gpus 1
ENTRYPOINT ["hpo"]
CMD ["--help"]
