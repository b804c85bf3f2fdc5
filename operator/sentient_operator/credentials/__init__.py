"""Credential sources (Kubernetes, Vault/OpenBao, AWS Secrets Manager, Azure Key Vault), keyed
fingerprints, the shared sync loop and key validation."""
