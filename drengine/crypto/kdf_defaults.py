"""Argon2id's default cost for new key files: a module of its own, so ``init --help`` and
``key --help`` show it without importing the cipher libraries."""

DEFAULT_KDF_MEMORY_KIB = 64 * 1024
DEFAULT_KDF_ITERATIONS = 3
DEFAULT_KDF_PARALLELISM = 2
