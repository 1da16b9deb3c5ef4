#!/usr/bin/env python3
"""Makes the TLS 1.2 AES-GCM record in Tests/IOTCPTLSTests with another implementation (Python's
cryptography, on OpenSSL), straight from RFC 5246 6.2.3.3 and RFC 5288 3: nonce = salt || explicit nonce
(the record number), additional data = seq_num || type || version || length, record = header || explicit
nonce || ciphertext || tag. Prints the record in hex."""
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

key = bytes(range(32))                      # AES-256-GCM
salt = bytes([0xa0, 0xa1, 0xa2, 0xa3])      # the 4-byte implicit part of the nonce
sequence = 5
plaintext = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
content_type = 23                           # application_data
explicit = sequence.to_bytes(8, "big")
aad = explicit + bytes([content_type, 3, 3]) + len(plaintext).to_bytes(2, "big")
sealed = AESGCM(key).encrypt(salt + explicit, plaintext, aad)   # ciphertext || tag
fragment = explicit + sealed
record = bytes([content_type, 3, 3]) + len(fragment).to_bytes(2, "big") + fragment
print(record.hex())
