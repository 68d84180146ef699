"""API key material: generation, the stored hash, the visible prefix."""

from __future__ import annotations

import hashlib
import re
import secrets

KEY_PREFIX = "afk_"
# 24 random bytes are 32 url-safe characters: 192 bits no guessing will cover.
_RANDOM_BYTES = 24
KEY_LENGTH = len(KEY_PREFIX) + 32
VISIBLE_PREFIX_LENGTH = 12
_SHAPE = re.compile(rf"^{KEY_PREFIX}[A-Za-z0-9_-]{{32}}$")


def new_key() -> str:
    """A fresh random key, e.g. "afk_3q2-...": shown to its owner once, never stored."""
    return KEY_PREFIX + secrets.token_urlsafe(_RANDOM_BYTES)


def well_formed(plaintext: str) -> bool:
    """Cheap shape check before hashing, so junk or oversized headers cost nothing."""
    return isinstance(plaintext, str) and _SHAPE.fullmatch(plaintext) is not None


def key_hash(plaintext: str) -> str:
    """The stored form of a key: sha256, hex.

    A slow salted hash (bcrypt, argon2) protects low-entropy passwords from offline guessing;
    these keys carry 192 random bits, so a stolen hash table cannot be brute-forced anyway, and
    an unsalted fast hash lets every request find its key with one indexed look-up.
    """
    return hashlib.sha256(plaintext.encode()).hexdigest()


def visible_prefix(plaintext: str) -> str:
    """What operators and the ledger see of a key, e.g. "afk_3q2-Ab9x"."""
    return plaintext[:VISIBLE_PREFIX_LENGTH]
