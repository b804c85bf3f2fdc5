# Redis for the kind tests (shared rate-limit counters and sessions): Debian's redis-server.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
USER 65532:65532
EXPOSE 6379
ENTRYPOINT ["redis-server", "--port", "6379", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
