# syntax=docker/dockerfile:1
# Aviary on an NVIDIA CUDA runtime: onnxruntime-gpu (CUDA, falling back to the CPU without --gpus).
#   docker build -t aviary .                     the ONNX engine (default target)
#   docker build -t aviary-nemo --target nemo .  plus NeMo and CUDA torch, for .nemo files and nvidia/* models
#   docker run -p 8000:8000 --gpus all -v aviary-data:/data aviary
ARG CUDA_IMAGE=nvidia/cuda:12.9.1-cudnn-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS base
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Unpinned apt packages: the CUDA base image fixes the distribution release, and its python3 is what it ships.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements/server.txt requirements/server.txt
COPY scripts/install-server scripts/install-server
COPY src src
RUN scripts/install-server /opt/aviary
RUN useradd --create-home --uid 10001 --user-group aviary \
    && mkdir -p /data/hf /data/uploads /data/aviary \
    && chown -R 10001:10001 /data
# Everything that must outlive the container on the volume: models, jobs (database, audio, results), uploads.
ENV PATH=/opt/aviary/bin:$PATH \
    HF_HOME=/data/hf \
    AVIARY_DATA_DIR=/data/aviary \
    AVIARY_UPLOAD_DIR=/data/uploads \
    AVIARY_HOST=0.0.0.0
WORKDIR /home/aviary
EXPOSE 8000
VOLUME ["/data"]
# Healthy once /ready answers 200: the default model serves. While it loads (a first download takes
# minutes) the check fails within the start period, which Docker counts as starting; a model that
# cannot load makes the container unhealthy. A jobs-database outage does not: /transcribe still works.
# The port as the server reads it: AVIARY_PORT, else the original server's PORT, else 8000 (so no ENV sets it).
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/ready' % (os.environ.get('AVIARY_PORT') or os.environ.get('PORT') or 8000), timeout=4)"]

FROM base AS nemo
USER 0
# The versions the test suite runs NeMo with, torch's without the lock's `+cpu` label: torch from
# PyPI is its CUDA build on Linux.
COPY requirements/lock.txt /src/requirements/lock.txt
RUN sed -E 's/^(torch==[^+]+)\+cpu$/\1/' /src/requirements/lock.txt > /src/requirements/cuda.txt \
    && /opt/aviary/bin/pip install --no-cache-dir --constraint /src/requirements/cuda.txt torch "nemo_toolkit[asr]"
ENV AVIARY_ENGINE=nemo
USER 10001:10001
CMD ["aviary", "serve"]

FROM base AS onnx
USER 10001:10001
CMD ["aviary", "serve"]
