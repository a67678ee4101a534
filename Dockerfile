# The one image both components run: `sluice operator` and `sluice proxy` (and `sluice
# fake-upstream`, for tests).
#   docker build -t sluice:0.1.0 .
# BASE is any Debian-like image whose python3 is 3.11 or newer with its venv module. Users get
# python:3.11-slim. The tests here build on a bookworm root filesystem made from Debian's
# packages (python3.11, python3-venv) with mmdebstrap: src/sluice/devcluster/image.py.
# Sluice lives in a venv, /opt/sluice, so it works the same on either base.
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
WORKDIR /src
# The versions the test suite ran with, for the build backend too (pip's env var reaches the
# isolated build environment, a flag would not).
ENV PIP_CONSTRAINT=/src/constraints.txt PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Where this build reaches PyPI, if not directly: an index, and a CA bundle (mounted by the
# builder, e.g. `buildah bud -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/host-ca.pem:ro`).
# Build stage only: none of it reaches the image.
ARG PIP_INDEX_URL
ARG PIP_CERT
COPY constraints.txt pyproject.toml README.md ./
COPY src ./src
# pip compiles the bytecode now: at runtime the root filesystem is read-only. pip and
# setuptools go afterwards; nothing installs at runtime.
RUN python3 -m venv /opt/sluice \
 && /opt/sluice/bin/pip install --quiet . \
 && /opt/sluice/bin/pip uninstall --quiet --yes pip setuptools

FROM ${BASE}
# The chart runs it as 65532 with a read-only root filesystem (and /tmp as an emptyDir).
RUN groupadd --gid 65532 sluice \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin sluice
COPY --from=build /opt/sluice /opt/sluice
# A full PATH, not ${PATH}: a base made from a root filesystem may set none.
ENV PATH=/opt/sluice/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["sluice"]
CMD ["--help"]
