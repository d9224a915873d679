# syntax=docker/dockerfile:1
# One image for the three roles; the command picks the role (see docker-compose.yml):
#   API (default)   python -m serving
#   stream worker   python -m streams
#   trainer         recsys trainer
# Build: docker build -t recsys-stream:0.1.0 --build-arg VCS_REF=$(git rev-parse --short HEAD) .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtualenv with the pinned dependencies and the project ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# a compiler for any dependency without a wheel for the target platform (implicit, say)
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# dependencies first, so that this layer is rebuilt only when the dependencies or pins change
COPY pyproject.toml ./
COPY infra/constraints.txt infra/constraints.txt
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(deps))" > requirements.txt \
 && pip install --no-cache-dir -c infra/constraints.txt -r requirements.txt
COPY . .
RUN pip install --no-cache-dir --no-deps -c infra/constraints.txt . \
 && pip check

# ---- runtime: the virtualenv on a clean slim base, run as an unprivileged user ----
FROM ${PYTHON_IMAGE} AS runtime
ARG VCS_REF=unknown
LABEL org.opencontainers.image.title="recsys-stream" \
      org.opencontainers.image.description="Real-time streaming movie recommender: stream worker, trainer and API" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.revision="${VCS_REF}"
# libgomp1: the OpenMP runtime of implicit's ALS when implicit was compiled from source.
# The directories exist in the image owned by the user, so that a new named volume mounted
# on them starts with that owner.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 recsys \
 && useradd --system --uid 10001 --gid recsys --create-home --home-dir /home/recsys recsys \
 && mkdir -p /data /var/lib/recsys/models /var/lib/recsys/eventlog /var/lib/recsys/stream \
 && chown -R recsys:recsys /data /var/lib/recsys
COPY --from=build /opt/venv /opt/venv
# many small matrix solves: one BLAS thread per process (the roles also limit it themselves)
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OPENBLAS_NUM_THREADS=1 \
    RECSYS_API_HOST=0.0.0.0 \
    RECSYS_API_PORT=8000 \
    RECSYS_DATA_DIR=/data \
    RECSYS_MODEL_DIR=/var/lib/recsys/models \
    RECSYS_EVENT_LOG_DIR=/var/lib/recsys/eventlog \
    RECSYS_STREAM_DATA_DIR=/var/lib/recsys/stream
WORKDIR /home/recsys
USER recsys:recsys
# 8000: API and its /metrics; 9101: worker metrics; 9102: trainer metrics
EXPOSE 8000 9101 9102
# for the default role, the API: the process answers (readiness is /readyz)
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('RECSYS_API_PORT', '8000'), timeout=4)"]
CMD ["python", "-m", "serving"]
