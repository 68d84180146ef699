# The platform image: installs exactly as the README does. CPU engine by default;
# `--build-arg ENGINE=gpu` selects vLLM's CUDA build (use a CUDA base image on GPU nodes).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}
ARG ENGINE=cpu
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc g++ libnuma1 procps curl wget \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/aifactory
COPY pyproject.toml README.md ./
COPY serving ./serving
COPY deployments ./deployments
COPY autoscaling ./autoscaling
COPY observability ./observability
COPY sdk ./sdk
RUN bash deployments/install.sh "${ENGINE}" --no-cache-dir
ENV PATH=/opt/aifactory/.venv/bin:$PATH \
    AIFACTORY_HOME=/var/lib/aifactory
# The platform runs as a user of its own: its data directory (store, keys, spool) is that
# user's alone (0700), and the installed code is not writable by it.
RUN useradd --system --uid 10001 --home-dir /var/lib/aifactory --shell /usr/sbin/nologin aifactory \
 && install -d -m 0700 -o aifactory -g aifactory /var/lib/aifactory
USER aifactory
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s CMD curl -fs http://127.0.0.1:8000/ready || exit 1
# `aifactory up` without --detach stays in the foreground and stops everything on SIGTERM.
CMD ["aifactory", "up", "--host", "0.0.0.0", "--port", "8000"]
