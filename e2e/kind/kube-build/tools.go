//go:build tools

// Package tools pins the node commands this module builds (kubelet, kubeadm, kube-proxy) and the
// control-plane commands whose images the node image preloads. The go.mod is that of
// e2e/kube-build (same Kubernetes release and replacements) with the go.sum entries the node
// commands need on top.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
