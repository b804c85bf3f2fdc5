# A Python 3.11 base for Dockerfile.operator and Dockerfile.runtime when no registry is reachable:
# Debian's python3 (3.11 on bookworm) on the debootstrapped base, with `python` and venv.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      python3 python3-venv python-is-python3 \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
CMD ["python"]
