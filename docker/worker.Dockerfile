# syntax=docker/dockerfile:1
# The Ray image: GPU workers, the Ray head, and the scheduler (a Ray driver). Ray refuses a node or
# a driver whose Ray or Python version differs from the head's (Python to the patch level, by
# default), so every Ray process of the stack runs this one image. Build from the repository root:
#   docker build -f docker/worker.Dockerfile -t symopt-worker .
# The base brings CUDA torch (torch>=2.9, as the project requires); choose another CUDA build with
# --build-arg BASE_IMAGE=pytorch/pytorch:<torch>-cuda<version>-cudnn9-runtime.
ARG BASE_IMAGE=pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SYMOPT_HOME=/var/lib/symopt \
    SYMOPT_ARTIFACT_ROOT=/var/lib/symopt/artifacts

# uid as in docker/Dockerfile: the artifact volume is shared with the API.
RUN groupadd --gid 10001 symopt \
    && useradd --uid 10001 --gid symopt --create-home --shell /usr/sbin/nologin symopt

WORKDIR /opt/symopt
COPY pyproject.toml README.md alembic.ini ./
COPY symopt_core ./symopt_core
COPY service ./service
COPY worker ./worker
COPY migrations ./migrations
# Keep the base image's CUDA torch: pinned as a constraint, pip can never replace it by another
# build. Editable for the same reason as in docker/Dockerfile (migrations/ beside the package).
RUN python -c "import torch; print('torch==' + torch.__version__)" > /tmp/torch-constraint.txt \
    && pip install --no-cache-dir -c /tmp/torch-constraint.txt -e ".[service]" \
    && python -c "import ray, symopt_core, worker.run" \
    && ray --version && symopt --help > /dev/null

COPY --chmod=0755 docker/ray-node.sh /usr/local/bin/ray-node

RUN mkdir -p /var/lib/symopt/artifacts /var/lib/symopt/data \
    && chown -R symopt:symopt /var/lib/symopt

# Numeric, so that a runtime (Kubernetes runAsNonRoot, say) can tell it is not root.
USER 10001:10001
# ray-node head | worker | scheduler [ARGS]: see docker/ray-node.sh.
ENTRYPOINT ["ray-node"]
CMD ["worker"]
