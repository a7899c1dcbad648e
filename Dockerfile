# The image of hpo's KFP components (pipelines.DEFAULT_IMAGE / HPO_IMAGE) and of `hpo` in a pod.
#   docker build -t <registry>/hpo:0.1.0 .   then compile with: HPO_IMAGE=<registry>/hpo:0.1.0 hpo pipelines compile out/
# Everything is installed at build time; nothing is downloaded when a pipeline step runs
# (YOLO_OFFLINE=1, models are built from Ultralytics' bundled YAMLs or read from the volume).
# No credentials here: MLflow/S3 settings come from a Kubernetes Secret at run time.
FROM python:3.11-slim

# OpenCV (an Ultralytics dependency) needs these shared libraries.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    YOLO_OFFLINE=1 \
    YOLO_CONFIG_DIR=/tmp/Ultralytics \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /opt/hpo
COPY pyproject.toml README.md ./
COPY hpo ./hpo
COPY plugins ./plugins
COPY pipelines ./pipelines
# torch from PyPI (Linux x86_64) ships CUDA; the components also need kfp (a dependency of hpo).
RUN pip install . \
    && python -c "import hpo, pipelines.step, kfp, torch, ultralytics; print('hpo', hpo.__version__)" \
    && hpo --help > /dev/null

# KFP sets the command of its lightweight components (python3 -m kfp.dsl.executor_main ...);
# run by hand, the image is the hpo CLI: docker run IMAGE preflight --mount /mnt/hpo --gpus 1
ENTRYPOINT ["hpo"]
CMD ["--help"]
