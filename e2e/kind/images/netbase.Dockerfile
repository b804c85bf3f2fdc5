# Base of the kube-proxy image: iptables and conntrack (same backend default as the node).
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      iptables nftables conntrack ipset kmod \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
